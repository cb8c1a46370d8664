"""Settings of ``purerl train-prm`` (YAML + ``key=value`` overrides, every value checked before anything
loads). Defaults follow PURE's PRM recipe in shape: stage 1 trains the new head alone, stage 2 all
weights at a low learning rate (docs/prm.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from purerl.config.loading import ConfigError, load_dataclass
from purerl.prmtools.stepdata import FORMATS, NEUTRAL, StepDataConfig


@dataclass
class StageConfig:
    """One training stage."""

    epochs: float = 1.0
    """Passes over the training examples (fractions allowed; 0 skips the stage)."""
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup: float = 0.05
    """Share of the stage's steps with a linearly rising learning rate (then cosine decay)."""


@dataclass
class TrainPRMConfig:
    """Everything ``purerl train-prm`` needs."""

    model: str = "builtin"
    """A causal-LM or token-classification folder / hub id (a 2-label head is added where missing), or
    ``builtin`` (the built-in task's warm-started policy, as the built-in PRM starts from)."""
    data: StepDataConfig = field(default_factory=StepDataConfig)
    """Step-labelled training solutions (TRL stepwise or PRM800K)."""
    heldout: StepDataConfig = field(default_factory=StepDataConfig)
    """Held-out solutions (empty ``path``: ``heldout_fraction`` of ``data``, drawn by ``seed``)."""
    heldout_fraction: float = 0.05
    separator: str = "\n"
    """Written after each step; its token carries the step's label (``prm.separator`` when training with
    the PRM)."""
    last_step_only: bool = False
    """Train on each solution's last step label only (an outcome-style signal)."""
    max_length: int = 0
    """Tokens per example (0: the model's ``max_position_embeddings``); longer ones are cut at a step
    boundary and counted."""
    batch_size: int = 8
    head: StageConfig = field(default_factory=lambda: StageConfig(epochs=1.0, lr=1e-3, warmup=0.0))
    """Stage 1: the head alone."""
    full: StageConfig = field(default_factory=lambda: StageConfig(epochs=1.0, lr=1e-5, weight_decay=0.01))
    """Stage 2: all weights (or LoRA adapters and the head)."""
    lora_rank: int = 0
    """Stage 2 with LoRA adapters of this rank (0: all weights); ``final/`` holds the merged model."""
    lora_alpha: int = 16
    max_steps: int = 0
    """Stop after this many optimizer steps in all (0: run both stages to the end)."""
    eval_every: int = 50
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    out_dir: str = "runs/prm"
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    tensorboard: bool = True


def load_train_prm_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainPRMConfig:
    """The config of ``purerl train-prm``, checked (:class:`ConfigError` naming the key)."""
    cfg = load_dataclass(TrainPRMConfig, path, overrides)
    check(cfg)
    return cfg


def check(cfg: TrainPRMConfig) -> None:
    if not cfg.data.path:
        raise ConfigError("data.path: a file of step-labelled solutions is needed (stepwise or PRM800K)")
    for name, section in (("data", cfg.data), ("heldout", cfg.heldout)):
        if section.format not in FORMATS:
            raise ConfigError(f"{name}.format={section.format!r}: choose one of {list(FORMATS)}")
        if section.neutral not in NEUTRAL:
            raise ConfigError(f"{name}.neutral={section.neutral!r}: choose one of {list(NEUTRAL)}")
    if not cfg.heldout.path and not 0 <= cfg.heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must lie in [0, 1), got {cfg.heldout_fraction}")
    at_least = {"batch_size": (cfg.batch_size, 1), "eval_every": (cfg.eval_every, 1),
                "max_length": (cfg.max_length, 0), "checkpoint_every": (cfg.checkpoint_every, 1),
                "keep_checkpoints": (cfg.keep_checkpoints, 1), "lora_rank": (cfg.lora_rank, 0),
                "max_steps": (cfg.max_steps, 0), "threads": (cfg.threads, 0)}  # fmt: skip
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}")
    for name, stage in (("head", cfg.head), ("full", cfg.full)):
        if not stage.epochs >= 0 or not stage.lr > 0 or not stage.weight_decay >= 0 or not 0 <= stage.warmup < 1:
            raise ConfigError(f"{name}: needs epochs >= 0, lr > 0, weight_decay >= 0, warmup in [0, 1); got {stage}")
    if cfg.head.epochs == 0 and cfg.full.epochs == 0:
        raise ConfigError("head.epochs and full.epochs are both 0: nothing to train")
    if not cfg.separator:
        raise ConfigError("separator must not be empty: its token carries each step's label")
