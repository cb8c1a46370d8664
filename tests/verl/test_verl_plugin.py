"""purerl as a verl 0.9.1 plugin (runs in the environment of the `verl` extra; skipped without verl):
the entry point registers; the ``pure_sync`` trainer's advantage step (verl's own, around the plugin's
estimator) gives hand-computed advantages with N from ``data.max_response_length``; the reward manager
puts each step's score on the right token, zero-step and over-long responses included; the same purerl
config gives the same advantages through verl as through ``purerl train``."""

from __future__ import annotations

import json
import os
import statistics
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

sys.path.insert(0, str(Path(__file__).parent))  # tests/verl/verl_support.py (pytest runs with --import-mode=importlib)
from verl_support import PLUGIN, ROOT, compose, layout_info, pure, pure_sync_advantages  # noqa: E402

from purerl.integrations.verl.estimator import layout_from_infos  # noqa: E402
from purerl.integrations.verl.reward import PureRewardManager  # noqa: E402


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


# A batch of 2 prompts x K = 2 responses (T = 4 tokens at most) with 1 to 3 steps each: the step scores, the
# index of each step's last token, and the verifiable rewards (prompt "a" carries ground truth, "b" none).
LENGTHS = [4, 2, 3, 4]
ENDS = [[1, 3], [1], [0, 1, 2], [3]]
SCORES = [[0.5, -0.5], [1.0], [0.2, -0.4, 0.6], [-1.0]]
UIDS = ["a", "a", "b", "b"]
VR = [1.0, 0.0, None, None]

# Expected advantages, by hand from DESIGN.md section 2 (whitening off). min: the worst step's score sits on
# its last token, so the returns G are r_w up to that token and 0 after: G = [-.5]*4, [1, 1], [-.4, -.4, 0],
# [-1]*4, summing to -2, 2, -0.8, -4. With K = 2 each baseline is the other response's sum / N:
# N = 8: b = 0.25, -0.25, -0.5, -0.1; N = 16: b = 0.125, -0.125, -0.25, -0.05; A = G - b on response tokens.
# VR (prompt "a" only): A^v = 1 - 0 = +1 and 0 - 1 = -1 on every token of the two responses.
# soft_min (T = 0.1): r*_j = softmax(-r/T)_j r_j. Response 0: weights 1/(1+e^10), e^10/(1+e^10), so
# r* = 2.2698e-5, -0.4999773 and G = -0.4999546 (x2), -0.4999773 (x2), summing to -1.9998638. Response 2:
# -r/T = -2, 4, -6 -> weights .0024726, .9974921, 4.5286e-5 -> r* = .00049452, -.39899684, 2.7172e-5.
TABLES = {
    ("min", 8, False): [[-0.75] * 4, [1.25, 1.25, 0, 0], [0.1, 0.1, 0.5, 0], [-0.9] * 4],
    ("min", 16, False): [[-0.625] * 4, [1.125, 1.125, 0, 0], [-0.15, -0.15, 0.25, 0], [-0.95] * 4],
    ("min", 8, True): [[0.25] * 4, [0.25, 0.25, 0, 0], [0.1, 0.1, 0.5, 0], [-0.9] * 4],
    ("soft_min", 8, False): [[-0.7499546021, -0.7499546021, -0.7499773011, -0.7499773011],
                             [1.2499829758, 1.2499829758, 0, 0], [0.1015287923, 0.1010342901, 0.5000271714, 0],
                             [-0.9003237817] * 4],
    ("soft_min", 16, True): [[0.3750453979, 0.3750453979, 0.3750226989, 0.3750226989],
                             [0.1249914879, 0.1249914879, 0, 0], [-0.1484712077, -0.1489657099, 0.2500271714, 0],
                             [-0.9501618909] * 4],
}  # fmt: skip


def _infos(with_vr: bool) -> list[dict]:
    return [layout_info(s, e, v if with_vr else None) for s, e, v in zip(SCORES, ENDS, VR)]


def _hand_config(n: int, mode: str, *more: str):
    return compose(*PLUGIN, f"data.max_response_length={n}", "actor_rollout_ref.rollout.n=2", *more,
                   *pure(f"algo.mode={mode}", "algo.whiten=false"))  # fmt: skip


@pytest.mark.parametrize(("mode", "n", "with_vr"), list(TABLES), ids=lambda v: str(v))
def test_pure_sync_gives_the_hand_computed_advantages(monkeypatch, mode, n, with_vr):
    """N comes from data.max_response_length through the trainer (the batch is 4 tokens wide)."""
    advantages, _ = pure_sync_advantages(monkeypatch, _hand_config(n, mode), _infos(with_vr), LENGTHS, UIDS)
    assert_close(advantages, torch.tensor(TABLES[mode, n, with_vr]), atol=1e-6, rtol=0)  # float32


def test_whitening_on_the_hand_table(monkeypatch):
    """The paper's default: whiten over the batch's response tokens (Bessel-corrected variance, eps 1e-8)."""
    config = compose(*PLUGIN, "data.max_response_length=16", *pure("algo.mode=soft_min", "algo.whiten=true"))
    advantages, _ = pure_sync_advantages(monkeypatch, config, _infos(True), LENGTHS, UIDS)
    table = TABLES["soft_min", 16, True]
    kept = [table[i][t] for i, n in enumerate(LENGTHS) for t in range(n)]
    mean, std = statistics.mean(kept), (statistics.variance(kept) + 1e-8) ** 0.5
    expected = [[(row[t] - mean) / std if t < n else 0.0 for t in range(4)] for row, n in zip(table, LENGTHS)]
    assert_close(advantages, torch.tensor(expected), atol=1e-6, rtol=0)


def test_verls_kl_penalty_in_the_reward_enters_the_returns(monkeypatch, caplog):
    """verl's own KL penalty (k1, coefficient 0.1) on response 0, whose log-probs exceed the reference's by
    0.5: -0.05 on each token, so G_0 = -0.7, -0.65, -0.6, -0.55 (sum -2.5, b_1 = -0.3125 with N = 8)."""
    config = _hand_config(8, "min", "algorithm.use_kl_in_reward=true", "algorithm.kl_penalty=kl",
                          "algorithm.kl_ctrl.kl_coef=0.1")  # fmt: skip
    ref = torch.zeros(4, 4)
    logprobs = torch.tensor([[0.5] * 4, [0.0] * 4, [0.0] * 4, [0.0] * 4])
    with caplog.at_level("INFO", logger="purerl.integrations.verl"):
        advantages, _ = pure_sync_advantages(monkeypatch, config, _infos(False), LENGTHS, UIDS, logprobs, ref)
    expected = [[-0.95, -0.9, -0.85, -0.8], [1.3125, 1.3125, 0, 0], [0.1, 0.1, 0.5, 0], [-0.9] * 4]
    assert_close(advantages, torch.tensor(expected), atol=1e-6, rtol=0)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "purerl.integrations.verl"]
    assert "KL: 0.1 kl in the reward - verl's, not purerl's default (0.001 low_var_kl in the reward)" in line


def _verl_data(token_level_rewards, uids):
    mask = torch.tensor([[1.0] * n + [0.0] * (4 - n) for n in LENGTHS])
    return DataProto.from_dict(
        tensors={"response_mask": mask, "token_level_rewards": token_level_rewards * mask,
                 "responses": torch.zeros_like(mask, dtype=torch.long)},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )  # fmt: skip


@pytest.mark.parametrize(("given_n", "expected"), [
    (["rollout.max_new_tokens=8"], TABLES["min", 8, False]),
    ([], [[-1.0] * 4, [1.5, 1.5, 0, 0], [0.6, 0.6, 1.0, 0], [-0.8] * 4]),  # N = the batch's width, 4
])  # fmt: skip
def test_the_estimator_alone_reads_steps_off_nonzero_token_rewards(given_n, expected):
    scores = torch.zeros(4, 4)
    for i, (ends, values) in enumerate(zip(ENDS, SCORES)):
        scores[i, ends] = torch.tensor(values)
    config = compose(*pure("algo.mode=min", "algo.whiten=false", *given_n)).algorithm
    out = compute_advantage(_verl_data(scores, UIDS), adv_estimator="pure", config=config)
    assert_close(out.batch["advantages"], torch.tensor(expected), atol=1e-6, rtol=0)  # float32


def _manager(tokenizer, prm_folder, *purerl_overrides: str, compute_score=None):
    keys = [f"prm.path={prm_folder}", "algo.vr_fraction=1.0", *purerl_overrides]
    config = OmegaConf.from_dotlist([f"algorithm.pure.{key}" for key in keys])
    return PureRewardManager(config=config, tokenizer=tokenizer, compute_score=compute_score)


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


def _run(manager, data) -> dict:
    return manager.loop.run_until_complete(manager.run_single(data))["reward_extra_info"]


def test_the_reward_manager_puts_each_step_score_on_its_last_token(bpe_tokenizer, prm_folder):
    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm

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
    expected = load_prm(PRMConfig(path=str(prm_folder))).score(["What is 2+1+4?"], [steps])[0]
    assert scores == pytest.approx(expected)
    assert info["pure_vr"] == info["acc"] == 1.0  # verl's MATH scorer on the boxed answer


def test_accuracy_on_every_row_with_ground_truth_and_vr_on_a_share(bpe_tokenizer, prm_folder):
    manager = _manager(bpe_tokenizer, prm_folder, "algo.vr_fraction=0.0")
    info = _run(manager, _row(bpe_tokenizer, "What is 2+2?", "So \\boxed{4}.", "4")[1])
    assert info["acc"] == 1.0 and info["pure_vr"] is None  # graded for the logs, no verifiable reward
    info = _run(manager, _row(bpe_tokenizer, "What is 2+2?", "So \\boxed{4}.", None)[1])
    assert info["acc"] is None and info["pure_vr"] is None
    prm_only = _manager(bpe_tokenizer, prm_folder, "algo.reward=prm")
    info = _run(prm_only, _row(bpe_tokenizer, "1+1?", "\\boxed{2}", "2")[1])
    assert info["acc"] == 1.0 and info["pure_vr"] is None  # algo.reward=prm: never a verifiable reward


def test_concurrent_responses_load_one_prm(bpe_tokenizer, prm_folder, monkeypatch):
    import asyncio

    import purerl.integrations.verl.reward as reward

    loads = []
    real = reward.load_prm
    monkeypatch.setattr(reward, "load_prm", lambda *a, **k: loads.append(1) or real(*a, **k))
    manager = _manager(bpe_tokenizer, prm_folder)
    rows = [_row(bpe_tokenizer, f"What is {i}+1?", f"{i}+1={i + 1}.\n\nSo \\boxed{{{i + 1}}}.", str(i + 1))[1]
            for i in range(8)]  # fmt: skip

    async def all_at_once():
        return await asyncio.gather(*(manager.run_single(r) for r in rows))

    outs = manager.loop.run_until_complete(all_at_once())
    assert len(loads) == 1 and all(o["reward_extra_info"]["acc"] == 1.0 for o in outs)


def test_zero_steps_and_steps_past_the_prm_limit_behave_as_in_purerl_train(bpe_tokenizer, prm_folder):
    manager = _manager(bpe_tokenizer, prm_folder)
    info = _run(manager, _row(bpe_tokenizer, "What is 1+1?", "   ", "2")[1])
    assert json.loads(info["pure_step_ends"]) == [] and info["pure_vr"] == 0.0  # no step, no answer: VR 0
    manager.prm.truncation.max_length = 30  # a PRM that sees 30 tokens: later steps get no score
    long = "\n\n".join(f"Add {i} to {i}: {i}+{i}={2 * i}." for i in range(1, 8))
    info = _run(manager, _row(bpe_tokenizer, "Sum them", long, None)[1])
    scores = json.loads(info["pure_step_rewards"])
    assert scores[0] is not None and scores[-1] is None and info["pure_vr"] is None
    layout = layout_from_infos([info])
    assert layout.step_mask.sum() == 7 and layout.scored_mask.sum() == sum(s is not None for s in scores) < 7
    assert manager.prm.truncated == 1


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


def _verl_rows(fx, tokenizer, ids) -> list:
    """Each fixed completion as the row verl's reward loop hands the reward manager (right-padded)."""
    width = max(len(row) for row in ids)
    rows = []
    for problem, row in zip([p for p in fx.PROBLEMS for _ in range(fx.K)], ids):
        prompt = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        pad = width - len(row)
        responses = torch.tensor([row + [tokenizer.pad_token_id] * pad])
        rows.append(DataProto.from_dict(
            tensors={"prompts": torch.tensor([prompt]), "responses": responses,
                     "attention_mask": torch.tensor([[1] * (len(prompt) + len(row)) + [0] * pad])},
            non_tensors={"extra_info": np.array([{"question": problem.prompt}], dtype=object),
                         "reward_model": np.array([{"ground_truth": problem.answer}], dtype=object),
                         "data_source": np.array(["purerl/arithmetic"], dtype=object)},
        ))  # fmt: skip
    return rows


def test_one_config_same_advantages_as_purerl_train(monkeypatch, load_script):
    """configs/engines/builtin.yaml read by verl (``+algorithm.pure.config``, verl's sampling keys equal to
    its rollout section, verl's KL 1e-3 low_var_kl in the reward as the config's default asks) on the
    fixed completions of tests/engine_fixture.py: the ``pure`` reward manager's step layout of each
    response (the built-in PRM, the built-in task's grader as verl's ``compute_score``), then verl's own
    advantage step with its KL penalty from the fixed log-probs and the ``pure`` estimator in pure_sync
    mode, equal purerl train's pipeline on the same numbers."""
    from transformers import AutoTokenizer

    from purerl.config import load_config
    from purerl.models.builtin import policy_path
    from purerl.tasks.arithmetic import grade

    fx = load_script(ROOT / "tests" / "engine_fixture.py")
    cfg = load_config(fx.CONFIG)
    tokenizer = AutoTokenizer.from_pretrained(policy_path(cfg))
    ids = fx.completion_ids(tokenizer)
    expected = fx.purerl_train_credit(cfg, tokenizer, ids)

    config = compose(*PLUGIN, f"+algorithm.pure.config={fx.CONFIG}", "actor_rollout_ref.rollout.n=4",
                     "data.train_batch_size=2", "data.max_response_length=80", "algorithm.use_kl_in_reward=true",
                     "algorithm.kl_penalty=low_var_kl", "algorithm.kl_ctrl.kl_coef=0.001")  # fmt: skip
    by_prompt = {p.prompt: p for p in fx.PROBLEMS}

    def compute_score(data_source, solution_str, ground_truth, extra_info):  # the built-in task's grader
        return float(grade(solution_str, by_prompt[extra_info["question"]]) is True)

    manager = PureRewardManager(config=config, tokenizer=tokenizer, compute_score=compute_score)
    infos = [_run(manager, row) for row in _verl_rows(fx, tokenizer, ids)]
    old, ref = fx.logprobs(ids)
    uids = [f"p{i}" for i in fx.group_ids().tolist()]
    advantages, trainer = pure_sync_advantages(monkeypatch, config, infos, [len(r) for r in ids], uids, old, ref)
    assert trainer.startup_line.endswith("KL: 0.001 low_var_kl in the reward")  # purerl's default, run by verl
    vr = layout_from_infos(infos).verifiable_rewards
    assert torch.equal(vr.isnan(), expected.verifiable_rewards.isnan())  # the same prompts carry VR
    assert 0 < int(vr.isnan().sum()) < len(ids) and expected.kl.abs().max() > 0.01
    assert_close(advantages, expected.advantages, atol=1e-6, rtol=0)
