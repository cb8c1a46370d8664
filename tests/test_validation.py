"""Validation: every bad value is rejected with a message naming its key, before any model is built,
and the choices come from the registries (a plugin's entries included)."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest

import purerl.models.builtin
import purerl.training.builders
import purerl.training.trainer
from purerl.config import TrainConfig, load_config
from purerl.config.loading import ConfigError
from purerl.registry import KL_ESTIMATORS, PRMS, ROLLOUT_BACKENDS, TASKS, TRANSFORMS


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n')
    return str(path)


BAD = [
    (["algo.mode=soft_min", "algo.temperature=0"], "algo.temperature must be > 0 for algo.mode=soft_min"),
    (["algo.mode=soft_min", "algo.temperature=-0.5"], "algo.temperature must be > 0"),
    (["algo.vr_fraction=1.5"], r"algo.vr_fraction must lie in \[0, 1\], got 1.5"),
    (["algo.vr_fraction=-0.1"], r"algo.vr_fraction must lie in \[0, 1\]"),
    (["algo.minibatches=3"], "algo.minibatches=3 must divide the batch, rollout.prompts_per_step"),
    (["algo.mode=max"], r"algo.mode='max': choose one of \['min', 'soft_min', 'sum'\]"),
    (["algo.kl_estimator=k9"], "algo.kl_estimator='k9': choose one of"),
    (["algo.reward=both"], "algo.reward='both': choose one of"),
    (["prm.kind=orm"], "prm.kind='orm': choose one of"),
    (["prm.score_map=log"], "prm.score_map='log'"),
    (["rollout.backend=vllm"], r"rollout.backend='vllm': choose one of \['hf'\]"),
    (["rollout.template=alpaca"], "rollout.template='alpaca'"),
    (["data.task=chess"], "data.task='chess': choose one of"),
    (["prm.kind=qwen_prm"], "prm.kind=qwen_prm needs prm.path"),
    (["prm.kind=math_shepherd"], "prm.kind=math_shepherd needs prm.path"),
    (["prm.kind=rule", "prm.path=some/prm"], "prm.kind=rule checks steps by program and takes no prm.path"),
    (["data.task=dataset"], "data.task=dataset needs data.train.path"),
    (["run.eval_every=0"], "run.eval_every must be positive"),
    (["run.checkpoint_every=0"], "run.checkpoint_every must be positive"),
    (["run.steps=-1"], "run.steps must be positive, got -1"),
    (["run.steps=0"], "run.steps must be positive, got 0"),
    (["run.keep_checkpoints=0"], "run.keep_checkpoints must be positive"),
    (["run.guards.zero_steps=explode"], "run.guards.zero_steps='explode': choose one of"),
    (["run.guards.rollback_lr_factor=2"], r"run.guards.rollback_lr_factor must lie in \(0, 1\]"),
    (["run.guards.max_rollbacks=-1"], "run.guards.max_rollbacks must be >= 0"),
    (["rollout.context=-1"], "rollout.context must be >= 0"),
    (["rollout.context=64", "rollout.max_new_tokens=64"], "leaves no room for a prompt in rollout.context=64"),
    (["run.threads=-2"], "run.threads must be >= 0"),
    (["rollout.temperature=0"], "rollout.temperature must be > 0"),
    (["algo.lr=0"], "algo.lr must be > 0"),
    (["algo.kl_coef=-1"], "algo.kl_coef must be >= 0"),
    (["plugins=[no_such_module_here]"], "plugins: cannot import 'no_such_module_here'"),
    (["run.steps=abc"], "run.steps: expected an integer, got 'abc'"),
    (["policy.lora_targets=[q_proj, true]"], r"policy.lora_targets\[1\]: expected a string, got True"),
    (["policy.lora_targets={a: 1}"], "policy.lora_targets: expected a list"),
    # a newline typed in a shell (backslash + n), or passed as a bare override (read as nothing)
    (["prm.separator=\\n"], r"prm.separator='\\\\n' is a backslash and a letter, not a newline"),
    (["prm.separator=\n"], "prm.separator is empty"),
    (["data.separator=\\n\\n"], r"data.separator='\\\\n\\\\n' is a backslash and a letter.*'\"\\n\\n\"'"),
    (["run.monitor.window=0"], "run.monitor: calibration must be >= 2 and window >= 1"),
    (["run.monitor.z=0"], "run.monitor.z must be > 0"),
    (["refresh.labels=some"], "refresh.labels='some': choose vr"),
    (["refresh.enabled=true", "prm.kind=rule"], "refresh.enabled=true with prm.kind=rule"),
]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if validation lets anything get as far as building a model or a task."""

    def boom(*args, **kwargs):
        raise AssertionError("a model or task was built before validation rejected the config")

    for name in ("build_policy", "build_prm", "build_task", "build_rollout", "policy_path", "load_prm"):
        monkeypatch.setattr(purerl.training.builders, name, boom)
    for name in ("prm_path", "policy_path"):
        monkeypatch.setattr(purerl.models.builtin, name, boom)
    for name in ("build_policy", "build_prm", "build_task", "build_rollout"):
        monkeypatch.setattr(purerl.training.trainer, name, boom)


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_each_bad_value_names_its_key(overrides, message, nothing_loads):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_dataset_and_task_settings_are_checked_against_each_other(data_file, nothing_loads):
    with pytest.raises(ConfigError, match=r"prm.kind=rule needs a task with an exact step checker"):
        load_config(None, [f"data.train.path={data_file}", "prm.kind=rule"])
    with pytest.raises(ConfigError, match=r"data.task=arithmetic is the built-in task"):
        load_config(None, [f"data.train.path={data_file}", "data.task=arithmetic"])
    cfg = load_config(None, [f"data.train.path={data_file}", "prm.kind=rule", "algo.reward=vr"])
    assert cfg.prm.kind == "rule"  # a VR-only run builds no PRM, so its kind does not matter


def test_the_trainer_validates_a_config_built_in_python(tmp_path, nothing_loads):
    """A config made in code (no load_config) is validated too before the trainer builds anything."""
    from purerl.training.trainer import Trainer

    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, mode="soft_min", temperature=0.0),
                              run=dataclasses.replace(cfg.run, out_dir=str(tmp_path / "run")))  # fmt: skip
    with pytest.raises(ConfigError, match=r"algo.temperature must be > 0"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()  # not even the run folder: no crash checkpoint to leave behind


def test_choices_come_from_the_registries(tmp_path, monkeypatch):
    """A plugin module registers a credit mode; the config accepts it and the credit math uses it."""
    import torch

    from purerl.algo.credit import transform_step_rewards

    (tmp_path / "my_credit_plugin.py").write_text(
        textwrap.dedent(
            """
            from purerl.algo.credit import TRANSFORMS

            @TRANSFORMS.register("last")
            def last_step_only(rewards, step_mask, temperature):
                # the last real step keeps its reward
                last = step_mask.long().cumsum(-1) == step_mask.long().sum(-1, keepdim=True)
                return rewards * (last & step_mask)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=r"algo.mode='last'"):
            load_config(None, ["algo.mode=last"])
        cfg = load_config(None, ["plugins=[my_credit_plugin]", "algo.mode=last"])
        assert cfg.algo.mode == "last" and "last" in TRANSFORMS
        r = torch.tensor([[0.5, -0.2, 0.3]])
        out = transform_step_rewards(r, torch.ones(1, 3, dtype=torch.bool), mode="last")
        assert out.tolist() == [[0.0, 0.0, 0.30000001192092896]]
    finally:
        TRANSFORMS._entries.pop("last", None)
        sys.modules.pop("my_credit_plugin", None)


def test_every_built_in_entry_resolves_to_what_its_protocol_needs():
    for name in TRANSFORMS:
        assert callable(TRANSFORMS.resolve(name)), name
    for name in KL_ESTIMATORS:
        assert callable(KL_ESTIMATORS.resolve(name)), name
    for name in PRMS:
        cls = PRMS.resolve(name)
        assert all(hasattr(cls, m) for m in ("check_config", "from_spec", "score")), name
    for name in TASKS:
        cls = TASKS.resolve(name)
        assert all(hasattr(cls, m) for m in ("check_config", "from_config", "sample", "grade", "has_reward_answer")), (
            name
        )
    for name in ROLLOUT_BACKENDS:
        assert hasattr(ROLLOUT_BACKENDS.resolve(name), "generate"), name
    with pytest.raises(ValueError, match=r"registered already"):
        TRANSFORMS.register("min", lambda r, m, t: r)


MACHINE = [
    (["policy.device=garbage"], "policy.device='garbage': not a device torch knows"),
    (["prm.device=cuda:99"], "prm.device='cuda:99': "),
    (["policy.device=meta"], "policy.device='meta': purerl cannot run a model on 'meta'"),
    (["policy.path=./no/such/policy"], "policy.path='./no/such/policy': no such file or folder"),
    (["prm.path=/no/such/prm"], "prm.path='/no/such/prm': no such file or folder"),
]


@pytest.mark.parametrize(("overrides", "message"), MACHINE, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_the_machine_check_names_the_key_before_the_first_model_loads(overrides, message, monkeypatch):
    """Devices and model paths are checked against this machine right before a model loads, not when a
    config loads: configs/paper.yaml (device: cuda) still loads on a laptop, to be read or checked."""
    import re

    from purerl.config.validation import check_machine

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the machine check")

    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_machine(cfg)
    monkeypatch.setattr(purerl.training.builders, "load_policy", boom)
    with pytest.raises(ConfigError, match=re.escape(message)):
        purerl.training.builders.build_policy(cfg)


def test_the_machine_check_skips_a_prm_that_a_vr_only_run_never_builds():
    from purerl.config.validation import check_machine

    check_machine(load_config(None, ["algo.reward=vr", "prm.device=garbage", "prm.path=./no/such/prm"]))
