"""The TRL route's configuration: the purerl YAML ``purerl train`` reads (sections ``task``, ``policy``,
``prm``, ``rollout``, ``algo``, ``data``, ``run``, ``plugins``) plus one section ``trl:`` of TRL
``GRPOConfig`` keys that purerl does not own (per-device batch size, bf16, vLLM, logging, ...).

One owner per setting: where TRL has its own name for a purerl setting (:data:`OWNED`), the purerl key
sets it and a ``trl:`` key for it is refused with a one-line error naming the purerl key. The purerl part
is validated exactly as :func:`purerl.config.load_config` validates it, so the defaults are the paper's
(:class:`purerl.config.AlgoConfig`) on this route too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from purerl.config import ConfigError, TrainConfig, load_dataclass, task_name, validate

__all__ = ["OWNED", "check_agreement", "grpo_config", "grpo_kwargs", "load_route_config",
           "optimizer_steps_per_step", "startup_lines"]  # fmt: skip

OWNED: dict[str, str] = {
    "num_generations": "rollout.k",
    "generation_batch_size": "rollout.prompts_per_step (times rollout.k)",
    "steps_per_generation": "algo.minibatches",
    "gradient_accumulation_steps": "algo.minibatches (with trl.per_device_train_batch_size)",
    "max_completion_length": "rollout.max_new_tokens",
    "temperature": "rollout.temperature",
    "vllm_max_model_length": "rollout.context",
    "learning_rate": "algo.lr",
    "lr_scheduler_type": "algo.lr (purerl's schedule: constant after a 5-step warm-up)",
    "lr_scheduler_kwargs": "algo.lr (purerl's schedule: constant after a 5-step warm-up)",
    "warmup_steps": "algo.lr (purerl's schedule: constant after a 5-step warm-up)",
    "epsilon": "algo.clip_ratio",
    "beta": "algo.kl_coef",
    "max_grad_norm": "algo.grad_clip",
    "num_iterations": "algo.ppo_epochs",
    "reward_weights": "algo.vr_coef",
    "scale_rewards": "algo.whiten",
    "multi_objective_aggregation": "algo.reward",
    "max_steps": "run.steps",
    "num_train_epochs": "run.steps",
    "seed": "run.seed",
    "data_seed": "run.seed",
    "output_dir": "run.out_dir",
    "save_strategy": "run.checkpoint_every",
    "save_steps": "run.checkpoint_every",
    "save_total_limit": "run.keep_checkpoints",
    "shuffle_dataset": "data.train",
    "use_cpu": "policy.device",
    "trust_remote_code": "policy.trust_remote_code",
    "model_init_kwargs": "policy.path and policy.dtype",
}
"""GRPOConfig keys purerl sets from its own config: TRL key -> the purerl key to set instead."""

TRL_DEFAULTS: dict[str, Any] = {
    "bf16": False,  # purerl computes in policy.dtype; set trl.bf16: true for mixed precision on GPUs
    "logging_steps": 1,  # purerl logs every step
    "loss_type": "dapo",  # PURE's loss: token mean over the batch
    "remove_unused_columns": False,
}
"""Defaults of this route for keys TRL owns (a ``trl:`` key replaces them)."""

_OWNED_GENERATION_KWARGS = {"temperature": "rollout.temperature", "max_new_tokens": "rollout.max_new_tokens",
                            "max_tokens": "rollout.max_new_tokens", "min_new_tokens": "rollout.min_new_tokens",
                            "min_tokens": "rollout.min_new_tokens"}  # fmt: skip
_OWNED_REPORTERS = {"wandb": "run.wandb", "tensorboard": "run.tensorboard", "all": "run.wandb and run.tensorboard"}


def load_route_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """``(TrainConfig, trl)`` from a YAML file and ``key=value`` overrides (``trl.KEY=VALUE`` for the
    ``trl:`` section): the purerl part checked by :func:`purerl.config.validate`, the ``trl`` part
    checked against TRL's GRPOConfig (:func:`check_trl_section`). Raises :class:`ConfigError`."""
    cfg = load_dataclass(TrainConfig, path, overrides)
    if not isinstance(cfg.trl, dict):
        raise ConfigError(f"trl: expected a mapping of GRPOConfig keys, got {cfg.trl!r}")
    validate(cfg)
    return cfg, check_trl_section(cfg.trl)


def check_trl_section(trl: dict) -> dict:
    """``trl`` checked: a key that is not GRPOConfig's, that purerl owns, or whose value has the wrong type
    is a :class:`ConfigError`; numbers YAML read as text (``1e-4``) become numbers."""
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    known = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    checked = {}
    for key, value in trl.items():
        if key in OWNED:
            raise ConfigError(f"trl.{key}: purerl owns this setting; set {OWNED[key]} instead")
        if key == "mask_truncated_completions" and value:
            raise ConfigError("trl.mask_truncated_completions: not with PURE: a truncated completion still has "
                              "steps the PRM scores and a value in its group's baseline")  # fmt: skip
        if key not in known:
            raise ConfigError(f"trl.{key}: not a key of TRL's GRPOConfig")
        checked[key] = _checked(f"trl.{key}", value, hints.get(key, Any))
    generation = checked.get("generation_kwargs") or {}
    if not isinstance(generation, dict):
        raise ConfigError(f"trl.generation_kwargs: expected a mapping, got {generation!r}")
    for key in _OWNED_GENERATION_KWARGS.keys() & set(generation):
        raise ConfigError(f"trl.generation_kwargs.{key}: purerl owns this setting; set {_OWNED_GENERATION_KWARGS[key]}")
    reporters = checked.get("report_to") or []
    for name in [reporters] if isinstance(reporters, str) else reporters:
        if name in _OWNED_REPORTERS:
            raise ConfigError(f"trl.report_to: {name} is purerl's setting; set {_OWNED_REPORTERS[name]}")
    return checked


def _checked(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the GRPOConfig field's type ``hint`` (a number written as text is converted)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    allowed = [typing.get_origin(arg) or arg for arg in args]
    if any(base is Any or (isinstance(base, type) and issubclass(base, Enum)) for base in allowed):
        return value
    if float in allowed and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    for base in allowed:
        if base is type(None) and value is None:
            return value
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if base in (str, dict, list) and isinstance(value, base):
            return value
    names = sorted({getattr(b, "__name__", str(b)).replace("NoneType", "null") for b in allowed})
    raise ConfigError(f"{key}: expected {' or '.join(names)}, got {value!r}")


def optimizer_steps_per_step(cfg: TrainConfig) -> int:
    """TRL counts optimizer steps; one purerl step (one generation round) makes ``minibatches x
    ppo_epochs`` of them."""
    return cfg.algo.minibatches * cfg.algo.ppo_epochs


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _batch_split(cfg: TrainConfig, trl: dict, processes: int) -> tuple[int, int]:
    """``(per_device_train_batch_size, gradient_accumulation_steps)``: one minibatch of purerl is one
    optimizer step of TRL (default: one micro-batch per process and minibatch, no accumulation)."""
    r, m = cfg.rollout, cfg.algo.minibatches
    completions = r.prompts_per_step * r.k
    per_device = trl.get("per_device_train_batch_size") or max(1, completions // (processes * m))
    if per_device < 1 or completions % (processes * per_device * m):
        raise ConfigError(
            f"rollout.prompts_per_step x rollout.k = {completions} completions do not split into algo.minibatches="
            f"{m} minibatches of {processes} process(es) x trl.per_device_train_batch_size={per_device}"
        )
    return per_device, completions // (processes * per_device * m)


def _report_to(cfg: TrainConfig, trl: dict) -> list[str] | str:
    extra = trl.get("report_to") or []
    extra = [] if extra == "none" else [extra] if isinstance(extra, str) else list(extra)
    reporters = ["wandb"] if cfg.run.wandb else []
    if cfg.run.tensorboard and importlib.util.find_spec("tensorboard") is not None:
        reporters.append("tensorboard")  # as purerl train: when tensorboard is installed
    return [*reporters, *(r for r in extra if r != "none")] or "none"


def _mapped(cfg: TrainConfig) -> dict[str, Any]:
    """The GRPOConfig values of purerl's settings that TRL names one to one."""
    r, a = cfg.rollout, cfg.algo
    return {"num_generations": r.k, "max_completion_length": r.max_new_tokens, "temperature": r.temperature,
            "learning_rate": a.lr, "epsilon": a.clip_ratio, "beta": a.kl_coef, "max_grad_norm": a.grad_clip,
            "num_iterations": a.ppo_epochs}  # fmt: skip


def grpo_kwargs(cfg: TrainConfig, trl: dict, processes: int | None = None) -> dict[str, Any]:
    """GRPOConfig's keyword arguments for ``cfg`` and the ``trl:`` section (:data:`OWNED` from purerl's
    keys, :data:`TRL_DEFAULTS` unless ``trl`` says otherwise, then the rest of ``trl``)."""
    r, run = cfg.rollout, cfg.run
    per_round = optimizer_steps_per_step(cfg)
    per_device, accumulation = _batch_split(cfg, trl, processes or _world_size())
    generation = dict(trl.get("generation_kwargs") or {})
    if r.min_new_tokens:
        generation["min_tokens" if trl.get("use_vllm") else "min_new_tokens"] = r.min_new_tokens
    owned = {
        **_mapped(cfg), "generation_batch_size": r.prompts_per_step * r.k, "vllm_max_model_length": r.context or None,
        "lr_scheduler_type": "constant", "max_steps": run.steps * per_round, "seed": run.seed,
        "output_dir": run.out_dir, "save_strategy": "steps", "save_steps": run.checkpoint_every * per_round,
        "save_total_limit": run.keep_checkpoints, "shuffle_dataset": False, "use_cpu": cfg.policy.device == "cpu",
        "per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation,
        "report_to": _report_to(cfg, trl), "generation_kwargs": generation or None,
    }  # fmt: skip
    return {**TRL_DEFAULTS, **_checkpointing(trl), **owned}


def _checkpointing(trl: dict) -> dict:
    """``trl`` with activation checkpointing off unless it asks for it, under the name this transformers
    knows (5.25 renamed TRL's ``gradient_checkpointing``, on by default, to ``activation_checkpointing``
    and warns on the old name)."""
    from trl import GRPOConfig

    new = any(f.name == "activation_checkpointing" for f in dataclasses.fields(GRPOConfig))
    name = "activation_checkpointing" if new else "gradient_checkpointing"
    trl = {(name if k == "gradient_checkpointing" else k): v for k, v in trl.items()}
    return {name: False, **trl}


def grpo_config(cfg: TrainConfig, trl: dict):
    """TRL's GRPOConfig for ``cfg``; a value TRL refuses is a one-line :class:`ConfigError`."""
    from trl import GRPOConfig

    kwargs = grpo_kwargs(cfg, trl)
    try:
        args = GRPOConfig(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError("TRL refuses the configuration: " + " ".join(str(err).split())) from None
    if args.steps_per_generation != kwargs["gradient_accumulation_steps"] * cfg.algo.minibatches:
        raise ConfigError(f"TRL sees {args.world_size} processes, WORLD_SIZE said {_world_size()}: launch with "
                          f"accelerate launch or torchrun")  # fmt: skip
    return args


def check_agreement(cfg: TrainConfig, args) -> None:
    """Raise :class:`ConfigError` where a GRPOConfig built by hand disagrees with the purerl config on a
    setting purerl owns (the trainer calls it, so that both cannot say different things)."""
    for key, value in _mapped(cfg).items():
        if getattr(args, key) != value:
            raise ConfigError(f"GRPOConfig.{key}={getattr(args, key)!r} but the purerl config's {OWNED[key]} says "
                              f"{value!r}: build it with purerl.integrations.trl.grpo_config")  # fmt: skip
    if args.mask_truncated_completions:
        raise ConfigError("mask_truncated_completions: not with PURE (a truncated completion still has scored steps)")


def _credit_text(cfg: TrainConfig) -> str:
    a = cfg.algo
    mode = f"soft_min T={a.temperature:g}" if a.mode == "soft_min" else a.mode
    share = f"PRM + VR on {a.vr_fraction:.0%} of the prompts"
    rewards = {"prm": "PRM only", "vr": "VR only", "prm+vr": share}[a.reward]
    if a.kl_coef == 0:
        kl = "no KL"
    elif a.kl_in_reward:
        kl = f"KL {a.kl_coef:g} {a.kl_estimator} in the reward (TRL's reference log-probs; TRL's loss beta 0)"
    else:
        kl = f"KL {a.kl_coef:g} k3 in TRL's loss"
    return f"{mode} credit, {rewards}, whitening {'on' if a.whiten else 'off'}, {kl}"


def startup_lines(cfg: TrainConfig, args) -> list[str]:
    """What this route will do (one line), then one line for each thing the purerl config asks that TRL
    does not do."""
    r, a, run = cfg.rollout, cfg.algo, cfg.run
    prm = "none" if a.reward == "vr" else f"{cfg.prm.kind} {cfg.prm.path or '(built-in)'}"
    lines = [
        f"PURE in TRL: {_credit_text(cfg)}; PRM {prm}; {r.prompts_per_step} prompts x {r.k} completions a step, "
        f"{optimizer_steps_per_step(cfg)} optimizer step(s) each ({args.world_size} process(es) x "
        f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} accumulation); {run.steps} steps"
    ]
    if a.kl_coef > 0 and not a.kl_in_reward and a.kl_estimator not in ("k3", "low_var_kl"):
        lines.append(f"algo.kl_estimator={a.kl_estimator}: TRL's KL loss (algo.kl_in_reward=false) is k3; k3 is used")
    heldout = task_name(cfg) == "arithmetic" or bool(cfg.data.heldout.path)
    if heldout:
        lines.append(f"run.eval_every={run.eval_every}: TRL runs no held-out evaluation here; evaluate "
                     f"{run.out_dir}/final with `purerl eval`")  # fmt: skip
    for flag, action in vars(run.guards).items():
        if action == "rollback":
            lines.append(f"run.guards.{flag}=rollback: TRL cannot roll back; the flag stops the run and names "
                         f"TRL's last checkpoint before it")  # fmt: skip
    if r.backend != "hf":
        lines.append(f"rollout.backend={r.backend}: TRL samples with transformers, or vLLM with trl.use_vllm")
    if r.context and not args.use_vllm:
        lines.append(f"rollout.context={r.context}: without trl.use_vllm TRL cuts no prompt to fit it")
    return lines
