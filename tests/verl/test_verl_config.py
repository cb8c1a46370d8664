"""The verl plugin's one config: verl's trainer config composed with the plugin's overrides reads the
same purerl YAML as ``purerl train``; the ``pure_sync`` trainer's start-up refuses, in one line naming
verl's key, a purerl setting that verl owns and sets differently; a bad PRM or credit setting gives
purerl's own one-line error on every reader; the plugin's former keys name the keys that replaced them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

verl = pytest.importorskip("verl", reason="needs the verl extra, in an environment of its own (see .ci/run)")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/verl/verl_support.py (pytest runs with --import-mode=importlib)
from verl_support import PLUGIN, ROOT, compose, pure  # noqa: E402

from purerl.config import ConfigError, load_config  # noqa: E402
from purerl.integrations.verl.config import check_plugin_config, read_pure  # noqa: E402
from purerl.integrations.verl.reward import PureRewardManager  # noqa: E402
from purerl.integrations.verl.trainer import PureTrainerSync  # noqa: E402

PAPER_OVERRIDES = (ROOT / "configs" / "verl" / "paper_overrides.txt").read_text().split()


def test_the_paper_overrides_read_purerl_trains_paper_config(monkeypatch):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    monkeypatch.chdir(ROOT)  # the overrides name configs/paper.yaml relative to the checkout
    cfg = compose(*PAPER_OVERRIDES)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert read_pure(cfg).cfg == load_config(ROOT / "configs" / "paper.yaml")  # what purerl train reads
    trainer = PureTrainerSync(cfg)  # every setting verl owns agrees with the paper config: no refusal
    assert trainer.trainer_mode == "sync"  # verl's own checks see its sync mode
    assert trainer.startup_line == (
        "purerl on verl: soft_min (T=0.1) credit, whiten on, prm+vr (VR on 10% of the prompts), "
        "N = data.max_response_length = 7168; KL: 0.001 low_var_kl in the reward"
    )
    assert cfg.algorithm.pure.config == str(ROOT / "configs" / "paper.yaml")  # absolute for the workers
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n == 512  # 64 prompts x 8


def _refusal(key, value, verl_key, verl_value, owner, set_what=None):
    value, verl_value = (str(v).lower() if isinstance(v, bool) else v for v in (value, verl_value))
    return (f"{key}={value} but {verl_key}={verl_value}: verl owns {owner}; set {set_what or verl_key}, "
            f"or drop {key} from the purerl config")  # fmt: skip


KL_REWARD = ["algorithm.use_kl_in_reward=true", "algorithm.kl_penalty=low_var_kl", "algorithm.kl_ctrl.kl_coef=0.001"]
KL_LOSS = ["actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.kl_loss_type=low_var_kl"]
REFUSALS = [
    (["rollout.k=8"], ["actor_rollout_ref.rollout.n=4"], "rollout.k=8 but actor_rollout_ref.rollout.n=4: verl owns "
     "sampling; set actor_rollout_ref.rollout.n, or drop rollout.k from the purerl config"),
    (["rollout.max_new_tokens=80"], ["data.max_response_length=64"],
     _refusal("rollout.max_new_tokens", 80, "data.max_response_length", 64, "sampling")),
    (["rollout.temperature=0.7"], [], _refusal("rollout.temperature", 0.7, "actor_rollout_ref.rollout.temperature",
                                               1.0, "sampling")),
    (["rollout.prompts_per_step=16"], [], _refusal("rollout.prompts_per_step", 16, "data.train_batch_size", 1024,
                                                   "sampling")),
    (["policy.path=Qwen/Qwen2.5-Math-7B"], [], _refusal(
        "policy.path", "Qwen/Qwen2.5-Math-7B", "actor_rollout_ref.model.path", "~/models/deepseek-llm-7b-chat",
        "the policy")),
    (["algo.lr=1e-4"], [], _refusal("algo.lr", 0.0001, "actor_rollout_ref.actor.optim.lr", 1e-06, "the optimizer")),
    (["algo.clip_ratio=0.3"], ["actor_rollout_ref.actor.clip_ratio=0.3"],
     _refusal("algo.clip_ratio", 0.3, "actor_rollout_ref.actor.clip_ratio_low", 0.2, "the optimizer",
              "actor_rollout_ref.actor.clip_ratio_low and clip_ratio_high (verl's clip_ratio is only their fallback)")),
    (["algo.minibatches=2"], [], _refusal("algo.minibatches", 2, "data.train_batch_size / "
                                          "actor_rollout_ref.actor.ppo_mini_batch_size", 4, "the optimizer",
                                          "actor_rollout_ref.actor.ppo_mini_batch_size")),
    (["algo.kl_in_reward=true"], [], _refusal("algo.kl_in_reward", True, "algorithm.use_kl_in_reward", False,
                                              "the KL penalty", "algorithm.use_kl_in_reward=true and "
                                              "algorithm.kl_ctrl.kl_coef=0.001 (0.001 in the reward)")),
    (["algo.kl_in_reward=true"], [*KL_REWARD, *KL_LOSS], _refusal(
        "algo.kl_in_reward", True, "actor_rollout_ref.actor.use_kl_loss", True, "the KL penalty",
        "actor_rollout_ref.actor.use_kl_loss=false")),
    (["algo.kl_coef=0.01"], KL_REWARD, _refusal("algo.kl_coef", 0.01, "algorithm.kl_ctrl.kl_coef", 0.001,
                                                "the KL penalty")),
    (["algo.kl_coef=0"], KL_LOSS, _refusal("algo.kl_coef", 0.0, "actor_rollout_ref.actor.use_kl_loss", True,
                                           "the KL penalty", "actor_rollout_ref.actor.use_kl_loss=false")),
    (["algo.kl_estimator=k3"], ["algorithm.use_kl_in_reward=true"], _refusal(
        "algo.kl_estimator", "k3", "algorithm.kl_penalty", "kl", "the KL penalty", "algorithm.kl_penalty=low_var_kl")),
    (["algo.kl_in_reward=false", "algo.kl_estimator=k2"], KL_LOSS, _refusal(
        "algo.kl_estimator", "k2", "actor_rollout_ref.actor.kl_loss_type", "low_var_kl", "the KL penalty",
        "actor_rollout_ref.actor.kl_loss_type=mse")),
]  # fmt: skip
"""(purerl keys given, verl's settings, the start-up's one line); verl's defaults otherwise: n 1, 512
response tokens, temperature 1.0, 1024 prompts a step, mini-batches of 256, lr 1e-6, clip 0.2, no KL."""


@pytest.mark.parametrize(("given", "verl_settings", "message"), REFUSALS, ids=lambda v: " ".join(v)[:60])
def test_the_start_up_refuses_a_setting_verl_owns_and_sets_differently(given, verl_settings, message):
    config = compose(*PLUGIN, *verl_settings, *pure(*given))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        PureTrainerSync(config)


def test_the_start_up_accepts_the_same_settings_given_on_both_sides(caplog):
    given = ["rollout.k=4", "rollout.max_new_tokens=64", "rollout.temperature=0.7", "rollout.prompts_per_step=8",
             "algo.lr=1e-5", "algo.clip_ratio=0.3", "algo.minibatches=2", "algo.kl_coef=0.01", "algo.kl_estimator=k2",
             "algo.kl_in_reward=true", "algo.ppo_epochs=2", "algo.grad_clip=0.5"]  # fmt: skip
    verl_settings = ["actor_rollout_ref.rollout.n=4", "data.max_response_length=64", "data.train_batch_size=8",
                     "actor_rollout_ref.rollout.temperature=0.7", "actor_rollout_ref.actor.optim.lr=1e-5",
                     "actor_rollout_ref.actor.clip_ratio_low=0.3", "actor_rollout_ref.actor.clip_ratio_high=0.3",
                     "actor_rollout_ref.actor.ppo_mini_batch_size=4", "algorithm.use_kl_in_reward=true",
                     "algorithm.kl_ctrl.kl_coef=0.01", "algorithm.kl_penalty=mse",
                     "actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.grad_clip=0.5"]  # fmt: skip
    with caplog.at_level("INFO", logger="purerl.integrations.verl"):
        trainer = PureTrainerSync(compose(*PLUGIN, *verl_settings, *pure(*given)))
    assert trainer.startup_line.endswith("N = data.max_response_length = 64; KL: 0.01 mse in the reward")
    assert [r.getMessage() for r in caplog.records if r.name == "purerl.integrations.verl"] == [trainer.startup_line]


def _readers(config):
    """The three parts that read the purerl config: the trainer's start-up, the reward manager and the
    estimator (which sees verl's algorithm section only)."""
    data = DataProto.from_dict(tensors={"response_mask": torch.ones(2, 3), "token_level_rewards": torch.zeros(2, 3)})
    return {
        "pure_sync trainer": lambda: PureTrainerSync(config),
        "reward manager": lambda: PureRewardManager(config=config, tokenizer=None),
        "estimator": lambda: compute_advantage(data, adv_estimator="pure", config=config.algorithm),
    }


def test_a_bad_prm_or_credit_setting_is_purerls_one_line_on_every_reader(bad_prm_or_credit):
    overrides, message = bad_prm_or_credit
    config = compose(*PLUGIN, *pure(*overrides))
    for reader, read in _readers(config).items():
        with pytest.raises(ConfigError) as caught:
            read()
        text = str(caught.value)
        assert re.search(message, text) and "\n" not in text, (reader, text)
        assert caught.value.__cause__ is None and (caught.value.__suppress_context__ or not caught.value.__context__)
        with pytest.raises(ConfigError, match=re.escape(text)):  # the same line purerl train gives
            load_config(None, overrides)


@pytest.mark.parametrize(("old", "message"), [
    ("+algorithm.pure.mode=min",
     "algorithm.pure.mode is no longer read: set algorithm.pure.algo.mode (Hydra: +algorithm.pure.algo.mode=VALUE)"),
    ("+algorithm.pure.max_len=64",
     "algorithm.pure.max_len is no longer read: N is verl's data.max_response_length; set that"),
    ("+reward.pure.prm_path=x",
     "reward.pure.prm_path is no longer read: set algorithm.pure.prm.path (Hydra: +algorithm.pure.prm.path=VALUE)"),
    ("+reward.pure.vr_fraction=0.5", "reward.pure.vr_fraction is no longer read: set algorithm.pure.algo.vr_fraction"),
    ("+algorithm.pure.temp=0.1", "algorithm.pure: unknown key 'temp'; known: config (a purerl YAML) and purerl's"),
])  # fmt: skip
def test_a_former_key_names_the_key_that_replaced_it(old, message):
    config = compose(*PLUGIN, old)
    readers = _readers(config)
    if old.startswith("+reward"):
        del readers["estimator"]  # it sees the algorithm section only
    for read in readers.values():
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
            read()


def test_a_missing_config_file_is_one_line():
    config = compose(*PLUGIN, "+algorithm.pure.config=/nowhere/purerl.yaml")
    with pytest.raises(ConfigError, match=r"^cannot read config /nowhere/purerl\.yaml: No such file"):
        PureTrainerSync(config)


def test_the_three_parts_refuse_to_run_without_each_other():
    full = {"algorithm": {"adv_estimator": "pure"}, "reward": {"reward_manager": {"name": "pure"}},
            "trainer": {"v1": {"trainer_mode": "pure_sync"}}}  # fmt: skip
    check_plugin_config(OmegaConf.create(full))
    check_plugin_config(OmegaConf.create({"algorithm": {"adv_estimator": "grpo"}}))  # not the plugin's run
    half = {**full, "trainer": {"v1": {"trainer_mode": "sync"}}}
    with pytest.raises(ValueError, match=r"needs all of .*trainer\.v1\.trainer_mode=sync"):
        check_plugin_config(OmegaConf.create(half))
    with pytest.raises(ValueError, match=r"needs all of .*trainer\.v1\.trainer_mode=sync"):
        PureTrainerSync(compose(*PLUGIN[:2]))
    data = DataProto.from_dict(tensors={"response_mask": torch.ones(2, 3), "token_level_rewards": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"outside trainer mode pure_sync"):
        compute_advantage(data, adv_estimator="pure", config=OmegaConf.create({"use_kl_in_reward": True}))
