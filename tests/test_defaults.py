"""Every dataclass default of the configuration, pinned against a literal table written here.

A changed default changes what a run does without any YAML changing, so it must fail a test and be
changed here on purpose. The table covers ``purerl train``'s config (:class:`TrainConfig` and every
section nested in it), ``purerl train-prm``'s (:class:`TrainPRMConfig` and its sections), and the
shared :class:`DataConfig` and :class:`GuardConfig`. A nested section is written ``Section(Class,
**changes)``: the class's own row, with the changes its field's default factory makes. Values are
compared with their types (``1`` is not ``1.0``), and a dataclass reachable from the roots without a
row of its own fails the coverage test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from purerl.config.schema import (
    AlgoConfig,
    DataSection,
    PolicyConfig,
    PRMConfig,
    PRMStagesConfig,
    RefreshConfig,
    RolloutConfig,
    RunConfig,
    SFTConfig,
    TinyModelConfig,
    TrainConfig,
)
from purerl.io.data import DataConfig
from purerl.pipeline.monitor import MonitorSettings
from purerl.prmtools.stepdata import StepDataConfig
from purerl.prmtools.train_prm_config import StageConfig, TrainPRMConfig
from purerl.tasks.arithmetic import ArithmeticConfig
from purerl.training.run_control import GuardConfig


@dataclasses.dataclass(frozen=True)
class Section:
    """A nested section's expected default: ``cls``'s row in :data:`DEFAULTS`, with ``changes``."""

    cls: type
    changes: dict

    def __init__(self, cls: type, **changes: Any):
        object.__setattr__(self, "cls", cls)
        object.__setattr__(self, "changes", changes)


DEFAULTS: dict[type, dict[str, Any]] = {
    # ------------------------------------------------------------------ purerl train (purerl.config.schema)
    TrainConfig: {
        "task": Section(ArithmeticConfig),
        "policy": Section(PolicyConfig),
        "prm": Section(PRMConfig),
        "rollout": Section(RolloutConfig),
        "algo": Section(AlgoConfig),
        "data": Section(DataSection),
        "refresh": Section(RefreshConfig),
        "run": Section(RunConfig),
        "plugins": [],
        "trl": {},  # GRPOConfig keys for the TRL route only; none by default
    },
    ArithmeticConfig: {
        "min_ops": 2,
        "max_ops": 4,
        "modulus": 10,
        "max_operand": 3,
        "ops": "+-",
        "heldout_percent": 10,
        "error_rate": 0.2,
        "misconception_rate": 0.6,
        "filler_rate": 0.15,
    },
    TinyModelConfig: {
        "hidden_size": 64,
        "num_layers": 4,
        "num_heads": 4,
        "intermediate_size": 256,
        "max_positions": 256,
    },
    SFTConfig: {"steps": 1500, "batch_size": 64, "lr": 1e-3, "seed": 0},
    PolicyConfig: {
        "path": None,
        "dtype": "float32",
        "device": "cpu",
        "trust_remote_code": False,
        "lora_rank": 0,
        "lora_alpha": 16,
        "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "size": Section(TinyModelConfig),
        "sft": Section(SFTConfig),
    },
    PRMStagesConfig: {
        "head_steps": 50,
        "full_steps": 3000,
        "batch_size": 64,
        "head_lr": 1e-3,
        "lr": 1e-3,
        "seed": 0,
        "dense_labels": True,
    },
    PRMConfig: {
        "kind": "token_classification",
        "path": None,
        "separator": "\n",
        "score_map": "none",
        "dtype": "float32",
        "device": "cpu",
        "trust_remote_code": False,
        "init_from_policy": True,
        "size": Section(TinyModelConfig, num_layers=2),  # the built-in PRM is shallower than the policy
        "train": Section(PRMStagesConfig),
        "data_error_rate": 0.5,
        "data_corrupt_rate": 0.2,
        "data_policy_samples": 4096,
        "data_policy_share": 0.7,
        "adapt_steps": 0,
        "adapt_lr": 5e-4,
    },
    DataSection: {"train": Section(DataConfig), "heldout": Section(DataConfig), "separator": "\n\n", "task": None},
    RolloutConfig: {
        "prompts_per_step": 16,
        "k": 8,
        "max_new_tokens": 80,
        "min_new_tokens": 0,
        "temperature": 1.0,
        "template": "raw",
        "system": None,
        "backend": "hf",
        "context": 0,
    },
    AlgoConfig: {
        "reward": "prm+vr",
        "mode": "soft_min",
        "temperature": 0.1,
        "vr_fraction": 0.1,
        "vr_coef": 1.0,
        "lr": 1e-4,
        "clip_ratio": 0.2,
        "ppo_epochs": 1,
        "minibatches": 2,
        "grad_clip": 1.0,
        "kl_coef": 1e-3,
        "kl_estimator": "k3",
        "kl_in_reward": True,
        "whiten": True,
    },
    RunConfig: {
        "steps": 120,
        "seed": 0,
        "out_dir": "runs/default",
        "eval_every": 10,
        "eval_size": 128,
        "eval_samples": 4,
        "checkpoint_every": 20,
        "keep_checkpoints": 2,
        "samples_every": 10,
        "threads": 0,
        "wandb": False,
        "tensorboard": True,
        "guards": Section(GuardConfig),
        "monitor": Section(MonitorSettings),
    },
    RefreshConfig: {
        "enabled": False,
        "labels": "vr",
        "objective": "mil",
        "blame": "min",
        "weighting": "classes",
        "gate": "none",
        "lr": 5e-4,
        "updates": 4,
        "batch_size": 32,
        "buffer": 1024,
        "positive_weight": 1.0,
        "anchor": 0.0,
        "smoothing": 0.0,
        "grad_clip": 1.0,
        "lora_rank": 0,
        "lora_alpha": 16,
    },
    MonitorSettings: {"calibration": 8, "window": 5, "z": 4.0, "z_eval": 2.0, "min_shrink": 0.15},
    # ------------------------------------------------------------------ shared sections
    GuardConfig: {
        "heldout_drop": "rollback",  # docs/hacking.md: the outcome-anchored detectors roll back, the others warn
        "accuracy_drop": "rollback",
        "proxy_divergence": "warn",
        "unrewarded_drop": "warn",
        "prm_disagreement": "warn",
        "shrinking": "warn",
        "length_to_cap": "warn",
        "step_inflation": "warn",
        "zero_steps": "warn",
        "one_giant_step": "warn",
        "repetition": "warn",
        "rollback_lr_factor": 0.5,
        "max_rollbacks": 3,
    },
    DataConfig: {
        "path": "",
        "split": "train",
        "question": ["question", "problem", "prompt"],
        "answer": ["answer", "final_answer", "gt", "last_boxed:solution"],
        "ref_answer": ["ref_answer"],
        "limit": None,
    },
    # ------------------------------------------------------------------ purerl train-prm
    TrainPRMConfig: {
        "model": "builtin",
        "data": Section(StepDataConfig),
        "heldout": Section(StepDataConfig),
        "heldout_fraction": 0.05,
        "separator": "\n",
        "last_step_only": False,
        "max_length": 0,
        "batch_size": 8,
        "head": Section(StageConfig, lr=1e-3, warmup=0.0),  # stage 1: the head alone, no warm-up
        "full": Section(StageConfig, weight_decay=0.01),  # stage 2: all weights at the class's lr 1e-5
        "lora_rank": 0,
        "lora_alpha": 16,
        "max_steps": 0,
        "eval_every": 50,
        "checkpoint_every": 100,
        "keep_checkpoints": 2,
        "out_dir": "runs/prm",
        "seed": 0,
        "threads": 0,
        "device": "cpu",
        "dtype": "float32",
        "tensorboard": True,
    },
    StageConfig: {"epochs": 1.0, "lr": 1e-5, "weight_decay": 0.0, "warmup": 0.05},
    StepDataConfig: {
        "path": "",
        "split": "train",
        "format": "auto",
        "prompt": ["prompt", "question", "problem"],
        "completions": ["completions", "steps"],
        "labels": ["labels"],
        "neutral": "correct",
        "limit": None,
    },
}

ROOTS = (TrainConfig, TrainPRMConfig, DataConfig, GuardConfig)


def typed(value: Any) -> Any:
    """``value`` with each leaf as ``(type name, value)``: equal only when the types are equal too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: typed(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


def expected(row: dict[str, Any]) -> dict[str, Any]:
    """A row of :data:`DEFAULTS` with each :class:`Section` expanded to its class's row and changes."""
    out = {}
    for key, value in row.items():
        if isinstance(value, Section):
            nested = DEFAULTS[value.cls]
            assert set(value.changes) <= set(nested), f"{key}: {sorted(set(value.changes) - set(nested))}"
            value = expected({**nested, **value.changes})
        out[key] = value
    return out


def reachable(cls: type, seen: set[type] | None = None) -> set[type]:
    """``cls`` and every dataclass its fields' defaults hold, transitively."""
    seen = set() if seen is None else seen
    seen.add(cls)
    for f in dataclasses.fields(cls):
        value = getattr(cls(), f.name)
        if dataclasses.is_dataclass(value) and type(value) not in seen:
            reachable(type(value), seen)
    return seen


def test_every_config_dataclass_has_a_row():
    found = set().union(*(reachable(root) for root in ROOTS))
    assert found == set(DEFAULTS), {"without a row": found - set(DEFAULTS), "not reachable": set(DEFAULTS) - found}


@pytest.mark.parametrize("cls", list(DEFAULTS), ids=lambda cls: cls.__name__)
def test_each_class_default_is_pinned(cls):
    """A class built with no arguments has exactly the table's fields and values (types included)."""
    assert typed(cls()) == typed(expected(DEFAULTS[cls]))


def test_nested_defaults_are_pinned_as_the_roots_build_them():
    """The roots' default factories (e.g. ``prm.size``'s 2 layers, ``head``'s lr) as a whole tree."""
    for root in ROOTS:
        assert typed(root()) == typed(expected(DEFAULTS[root])), root.__name__
    assert dataclasses.asdict(TrainConfig())["prm"]["size"]["num_layers"] == 2
    assert dataclasses.asdict(TrainConfig())["policy"]["size"]["num_layers"] == 4


def test_the_credit_defaults_are_the_papers():
    """The authors' training config is the ground truth for these settings (DESIGN.md section 7: the PURE
    reference repository, branch ``verl``, ``verl/trainer/config/ppo_trainer.yaml``): soft-min credit with
    T = 0.1 (``credit_assignment: 0.1``), RLOO with ``adv_norm: True`` (whitening), KL ``low_var_kl``
    (k3) with coefficient 0.001 in the reward (``use_kl_loss: False``); and the paper's PRM+VR setting,
    verifiable rewards on 10% of the training prompts."""
    from purerl.config import load_config
    from purerl.pipeline.advantages import CreditSettings
    from purerl.registry import DEFAULT_TEMPERATURE

    algo = AlgoConfig()
    paper = {"mode": "soft_min", "temperature": 0.1, "whiten": True, "kl_coef": 1e-3, "kl_estimator": "k3",
             "kl_in_reward": True, "reward": "prm+vr", "vr_fraction": 0.1}  # fmt: skip
    assert {key: getattr(algo, key) for key in paper} == paper
    assert DEFAULT_TEMPERATURE == 0.1
    assert load_config(None).algo == algo  # no defaults file changes them on the way in
    credit = CreditSettings.from_algo(algo, max_len=80)  # the one place a config becomes credit settings
    assert (credit.mode, credit.temperature, credit.whiten, credit.kl_coef, credit.kl_estimator, credit.kl_in_reward,
            credit.process_rewards) == ("soft_min", 0.1, True, 1e-3, "k3", True, True)  # fmt: skip


def test_a_changed_default_fails_the_comparison():
    """The comparison can fail: a value, a type and an extra field each differ from the table."""
    row = DEFAULTS[AlgoConfig]
    assert typed(AlgoConfig(temperature=0.2)) != typed(expected(row))
    assert typed(expected({**row, "ppo_epochs": 1.0})) != typed(expected(row))
    assert typed(AlgoConfig()) != typed(expected({**row, "extra": 1}))
