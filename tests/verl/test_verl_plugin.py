"""purerl as a verl 0.9.1 plugin (runs in the environment of the `verl` extra; skipped without verl):
the entry point registers, verl's trainer config composes with the plugin's overrides, the estimator's
advantages equal purerl.algo.credit on the same numbers, and the reward manager puts each step's score on
the right token, zero-step and over-long responses included."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

verl = pytest.importorskip("verl", reason="needs the verl extra, in an environment of its own (see .ci/run)")

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from purerl.algo.credit import pure_advantages  # noqa: E402
from purerl.algo.stats import masked_whiten  # noqa: E402
from purerl.integrations.verl.estimator import StepLayout, layout_from_infos, step_layout  # noqa: E402
from purerl.integrations.verl.reward import PureRewardManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAPER_OVERRIDES = (ROOT / "configs" / "verl" / "paper_overrides.txt").read_text().split()


def test_the_entry_point_registers_in_a_fresh_process():
    """What a Ray worker does: import verl, which loads the `verl.plugins` entry points."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
        "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
        "from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY\n"
        "print(get_adv_estimator_fn('pure').__module__, get_reward_manager_cls('pure').__name__, "
        "TRAINER_REGISTRY['pure_sync'].__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["purerl.integrations.verl.estimator", "PureRewardManager", "PureTrainerSync"]


def test_the_trainer_config_composes_with_the_paper_overrides():
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=PAPER_OVERRIDES)
    assert cfg.algorithm.adv_estimator == "pure" and cfg.algorithm.pure.mode == "soft_min"
    assert cfg.algorithm.pure.temperature == 0.1 and cfg.algorithm.pure.whiten is True
    assert cfg.reward.reward_manager.name == "pure" and cfg.trainer.v1.trainer_mode == "pure_sync"
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == 512  # 64 prompts x 8
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n == 512
    assert cfg.algorithm.use_kl_in_reward and cfg.algorithm.kl_penalty == "low_var_kl"
    assert cfg.algorithm.kl_ctrl.kl_coef == 0.001 and cfg.data.max_response_length == 7168
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def _batch(seed: int = 0):
    """6 responses, 2 prompts x K = 3: step scores, step ends and lengths, VR with one missing."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [12, 7, 15, 9, 3, 12]
    ends = [[3, 8, 11], [6], [2, 9, 12, 14], [4, 8], [], [5, 11]]
    rewards = [torch.rand(len(e), generator=gen).mul(2).sub(1).tolist() for e in ends]
    width = max(lengths)
    response_mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    infos = [{"pure_step_rewards": json.dumps(r), "pure_step_ends": json.dumps(e), "pure_vr": v}
             for r, e, v in zip(rewards, ends, [1.0, 0.0, None, 1.0, 0.0, 1.0])]  # fmt: skip
    return response_mask, infos, np.array(["a", "a", "a", "b", "b", "b"], dtype=object)


def _verl_data(response_mask, token_level_rewards, uids):
    return DataProto.from_dict(
        tensors={"response_mask": response_mask, "token_level_rewards": token_level_rewards,
                 "responses": torch.zeros_like(response_mask, dtype=torch.long)},
        non_tensors={"uid": uids},
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["min", "soft_min", "sum"])
@pytest.mark.parametrize("whiten", [False, True])
def test_the_estimator_gives_pure_advantages(mode, whiten):
    response_mask, infos, uids = _batch()
    layout = layout_from_infos(infos)
    kl = torch.rand(response_mask.shape, generator=torch.Generator().manual_seed(1)) * response_mask
    config = OmegaConf.create({"pure": {"mode": mode, "temperature": 0.5, "vr_coef": 0.5, "whiten": whiten}})
    data = _verl_data(response_mask, -0.01 * kl, uids)  # verl's KL penalty in the reward, nothing else
    layout.max_len = 64  # N: data.max_response_length, wider than this batch's longest response
    with step_layout(layout):
        out = compute_advantage(data, adv_estimator="pure", config=config)
    expected, returns = pure_advantages(
        layout.step_rewards, layout.step_mask, layout.step_ends, response_mask, torch.tensor([0, 0, 0, 1, 1, 1]),
        torch.tensor([1.0, 0.0, math.nan, 1.0, 0.0, 1.0]), mode=mode, temperature=0.5, vr_coef=0.5,
        max_len=64, token_penalty=-0.01 * kl,
    )  # fmt: skip
    if whiten:
        expected = masked_whiten(expected, response_mask)
    assert_close(out.batch["advantages"], expected)
    assert_close(out.batch["returns"], returns)


def test_the_estimator_alone_reads_steps_off_nonzero_token_rewards():
    response_mask, infos, uids = _batch()
    layout = layout_from_infos(infos)
    scores = torch.zeros_like(response_mask)
    for i in range(len(infos)):
        n = int(layout.step_mask[i].sum())
        scores[i, layout.step_ends[i, :n]] = layout.step_rewards[i, :n]
    out = compute_advantage(_verl_data(response_mask, scores, uids), adv_estimator="pure",
                            config=OmegaConf.create({"pure": {"mode": "min"}}))  # fmt: skip
    expected, _ = pure_advantages(layout.step_rewards, layout.step_mask, layout.step_ends, response_mask,
                                  torch.tensor([0, 0, 0, 1, 1, 1]), mode="min")  # fmt: skip
    assert_close(out.batch["advantages"], expected)


def _manager(tokenizer, prm_folder, **pure):
    config = OmegaConf.create({"reward": {"pure": {"prm_path": str(prm_folder), "vr_fraction": 1.0, **pure}}})
    return PureRewardManager(config=config, tokenizer=tokenizer, compute_score=None)


def _row(tokenizer, question: str, response: str, truth: str | None):
    prompt = tokenizer(question, add_special_tokens=False)["input_ids"]
    ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pad = 4  # right padding after the response, as verl pads
    responses = torch.tensor([ids + [tokenizer.pad_token_id] * pad])
    attention = torch.tensor([[1] * (len(prompt) + len(ids)) + [0] * pad])
    return ids, DataProto.from_dict(
        tensors={"prompts": torch.tensor([prompt]), "responses": responses, "attention_mask": attention},
        non_tensors={"extra_info": np.array([{"question": question}], dtype=object),
                     "reward_model": np.array([{"ground_truth": truth}], dtype=object),
                     "data_source": np.array(["lighteval/MATH"], dtype=object)},
    )  # fmt: skip


def test_the_reward_manager_puts_each_step_score_on_its_last_token(bpe_tokenizer, prm_folder):
    from purerl.training.builders import load_prm

    manager = _manager(bpe_tokenizer, prm_folder)
    response = "Add 1 to 2: 2+1=3.\n\nAdd 4 to 3: 3+4=7.\n\nThe answer is \\boxed{7}."
    ids, data = _row(bpe_tokenizer, "What is 2+1+4?", response, "7")
    out = manager.loop.run_until_complete(manager.run_single(data))
    assert out["reward_score"] == 0.0
    info = out["reward_extra_info"]
    ends, scores = json.loads(info["pure_step_ends"]), json.loads(info["pure_step_rewards"])
    steps = response.split("\n\n")
    assert len(ends) == len(scores) == info["pure_steps"] == 3 and ends[-1] == len(ids) - 1  # EOS ends the last
    for step, end in zip(steps[:-1], ends):
        assert bpe_tokenizer.decode(ids[: end + 1]).rstrip().endswith(step.rstrip())  # its last character
    expected = load_prm(str(prm_folder), "token_classification").score(["What is 2+1+4?"], [steps])[0]
    assert scores == pytest.approx(expected)
    assert info["pure_vr"] == info["acc"] == 1.0  # verl's MATH scorer on the boxed answer


def test_accuracy_on_every_row_with_ground_truth_and_vr_on_a_share(bpe_tokenizer, prm_folder):
    manager = _manager(bpe_tokenizer, prm_folder, vr_fraction=0.0)
    _, data = _row(bpe_tokenizer, "What is 2+2?", "So \\boxed{4}.", "4")
    info = manager.loop.run_until_complete(manager.run_single(data))["reward_extra_info"]
    assert info["acc"] == 1.0 and info["pure_vr"] is None  # graded for the logs, no verifiable reward
    _, data = _row(bpe_tokenizer, "What is 2+2?", "So \\boxed{4}.", None)
    info = manager.loop.run_until_complete(manager.run_single(data))["reward_extra_info"]
    assert info["acc"] is None and info["pure_vr"] is None


def test_concurrent_responses_load_one_prm(bpe_tokenizer, prm_folder, monkeypatch):
    import asyncio

    import purerl.integrations.verl.reward as reward

    loads = []
    real = reward.load_prm
    monkeypatch.setattr(reward, "load_prm", lambda settings: loads.append(1) or real(settings))
    manager = _manager(bpe_tokenizer, prm_folder)
    rows = [_row(bpe_tokenizer, f"What is {i}+1?", f"{i}+1={i + 1}.\n\nSo \\boxed{{{i + 1}}}.", str(i + 1))[1]
            for i in range(8)]  # fmt: skip

    async def all_at_once():
        return await asyncio.gather(*(manager.run_single(r) for r in rows))

    outs = manager.loop.run_until_complete(all_at_once())
    assert len(loads) == 1 and all(o["reward_extra_info"]["acc"] == 1.0 for o in outs)


def test_the_three_parts_refuse_to_run_without_each_other(bpe_tokenizer, prm_folder):
    from purerl.integrations.verl.reward import check_plugin_config

    full = {"algorithm": {"adv_estimator": "pure"}, "reward": {"reward_manager": {"name": "pure"}},
            "trainer": {"v1": {"trainer_mode": "pure_sync"}}}  # fmt: skip
    check_plugin_config(OmegaConf.create(full))
    check_plugin_config(OmegaConf.create({"algorithm": {"adv_estimator": "grpo"}}))  # not the plugin's run
    half = {**full, "trainer": {"v1": {"trainer_mode": "sync"}}}
    with pytest.raises(ValueError, match=r"needs all of .*trainer\.v1\.trainer_mode=sync"):
        check_plugin_config(OmegaConf.create(half))
    with pytest.raises(ValueError, match=r"reward\.pure\.reward='prm\+vr ': choose one of"):
        _manager(bpe_tokenizer, prm_folder, reward="prm+vr ")
    with pytest.raises(ValueError, match=r"reward\.pure: unknown key"):
        _manager(bpe_tokenizer, prm_folder, vr_fractoin=0.5)
    response_mask, _, uids = _batch()
    data = _verl_data(response_mask, torch.zeros_like(response_mask), uids)
    with pytest.raises(ValueError, match=r"outside trainer mode pure_sync"):
        compute_advantage(data, adv_estimator="pure", config=OmegaConf.create({"use_kl_in_reward": True}))
    with pytest.raises(ValueError, match=r"algorithm\.pure: unknown key"):
        compute_advantage(data, adv_estimator="pure", config=OmegaConf.create({"pure": {"temp": 0.1}}))


def test_zero_steps_and_steps_past_the_prm_limit_behave_as_in_purerl_train(bpe_tokenizer, prm_folder):
    manager = _manager(bpe_tokenizer, prm_folder)
    _, data = _row(bpe_tokenizer, "What is 1+1?", "   ", "2")
    info = manager.loop.run_until_complete(manager.run_single(data))["reward_extra_info"]
    assert json.loads(info["pure_step_ends"]) == [] and info["pure_vr"] == 0.0  # no step, no answer: VR 0
    manager.prm.truncation.max_length = 30  # a PRM that sees 30 tokens: later steps get no score
    long = "\n\n".join(f"Add {i} to {i}: {i}+{i}={2 * i}." for i in range(1, 8))
    _, data = _row(bpe_tokenizer, "Sum them", long, None)
    info = manager.loop.run_until_complete(manager.run_single(data))["reward_extra_info"]
    scores = json.loads(info["pure_step_rewards"])
    assert scores[0] is not None and scores[-1] is None and info["pure_vr"] is None
    layout = layout_from_infos([info])
    assert layout.step_mask.sum() == 7 and layout.scored_mask.sum() == sum(s is not None for s in scores) < 7
    assert manager.prm.truncated == 1


def test_the_trainer_mode_is_sync_to_verl():
    from purerl.integrations.verl.trainer import PureTrainerSync

    trainer = PureTrainerSync.__new__(PureTrainerSync)
    trainer.trainer_mode = "pure_sync"
    assert trainer.trainer_mode == "sync"
    assert isinstance(layout_from_infos([{}]), StepLayout)  # a response the reward manager did not see


def test_problems_become_verl_rows(tmp_path):
    import pyarrow.parquet as pq

    from purerl.integrations.verl.data import main

    src = tmp_path / "math.jsonl"
    src.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": "null", "ref_answer": "4"}\n')
    assert main([str(src), str(tmp_path / "train.parquet")]) == 0
    rows = pq.read_table(tmp_path / "train.parquet").to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["2", None]
    assert rows[0]["extra_info"]["question"] == "1+1?" and rows[0]["prompt"][-1] == {"role": "user", "content": "1+1?"}
    assert main([str(tmp_path / "nope.jsonl"), str(tmp_path / "x.parquet")]) == 2
