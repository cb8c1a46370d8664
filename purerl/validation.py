"""Check a :class:`purerl.config.TrainConfig` before anything is built.

Every config error is raised here, with the key it concerns, before a model, tokenizer or dataset is
loaded: choices come from the registries (``purerl.registry``: nothing there imports torch until an
entry is used), numbers are range-checked, and each component checks the settings it owns (a task its
data, a PRM kind its path and the task it can score). Nothing here imports torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from purerl.registry import KL_ESTIMATORS, PRMS, ROLLOUT_BACKENDS, TASKS, TRANSFORMS, load_plugins

if TYPE_CHECKING:
    from purerl.config import TrainConfig

REWARDS = ("prm", "vr", "prm+vr")
"""``algo.reward``: process rewards only, verifiable rewards only, or both (PURE's PRM+VR)."""
SCORE_MAPS = ("none", "affine")
"""``prm.score_map``: keep a PRM's score range, or map [0, 1] scores to [-1, 1]."""


def check(cfg: TrainConfig) -> None:
    """Raise :class:`purerl.config.ConfigError` naming the first key whose value does not fit."""
    from purerl.config import ConfigError, task_name

    try:
        load_plugins(cfg.plugins)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_choices(cfg, task_name(cfg))
    _check_numbers(cfg)
    task = TASKS.resolve(task_name(cfg))
    try:
        task.check_config(cfg)
        if cfg.algo.reward != "vr":
            PRMS.resolve(cfg.prm.kind).check_config(cfg.prm, task)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_choices(cfg: TrainConfig, task: str) -> None:
    from purerl.config import ConfigError
    from purerl.prompts import TEMPLATES

    choices = {
        "algo.reward": (cfg.algo.reward, REWARDS),
        "algo.mode": (cfg.algo.mode, TRANSFORMS),
        "algo.kl_estimator": (cfg.algo.kl_estimator, KL_ESTIMATORS),
        "prm.kind": (cfg.prm.kind, PRMS),
        "prm.score_map": (cfg.prm.score_map, SCORE_MAPS),
        "rollout.template": (cfg.rollout.template, TEMPLATES),
        "rollout.backend": (cfg.rollout.backend, ROLLOUT_BACKENDS),
        "data.task": (task, TASKS),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: choose one of {sorted(allowed)}")


def _check_numbers(cfg: TrainConfig) -> None:
    from purerl.config import ConfigError

    r, a, run = cfg.rollout, cfg.algo, cfg.run
    at_least = {
        "rollout.k": (r.k, 1), "rollout.prompts_per_step": (r.prompts_per_step, 1),
        "rollout.max_new_tokens": (r.max_new_tokens, 1), "algo.minibatches": (a.minibatches, 1),
        "algo.ppo_epochs": (a.ppo_epochs, 1), "run.steps": (run.steps, 0), "run.eval_size": (run.eval_size, 1),
        "run.eval_every": (run.eval_every, 1), "run.checkpoint_every": (run.checkpoint_every, 1),
        "run.samples_every": (run.samples_every, 1), "run.eval_samples": (run.eval_samples, 0),
        "run.threads": (run.threads, 0),
    }  # fmt: skip
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key} must be {'positive' if low == 1 else '>= 0'}, got {value}")
    if a.mode == "soft_min" and not a.temperature > 0:
        raise ConfigError(f"algo.temperature must be > 0 for algo.mode=soft_min (PURE Eq. 5), got {a.temperature}")
    if not r.temperature > 0:
        raise ConfigError(f"rollout.temperature must be > 0, got {r.temperature}")
    if not 0.0 <= a.vr_fraction <= 1.0:
        raise ConfigError(f"algo.vr_fraction must lie in [0, 1], got {a.vr_fraction}")
    for key, value in {"algo.lr": a.lr, "algo.clip_ratio": a.clip_ratio, "algo.grad_clip": a.grad_clip}.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if not a.kl_coef >= 0:
        raise ConfigError(f"algo.kl_coef must be >= 0, got {a.kl_coef}")
    if (r.prompts_per_step * r.k) % a.minibatches:
        raise ConfigError(
            f"algo.minibatches={a.minibatches} must divide the batch, rollout.prompts_per_step * rollout.k = "
            f"{r.prompts_per_step * r.k}"
        )
