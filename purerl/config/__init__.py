"""Configuration: one dataclass per subsystem (:mod:`purerl.config.schema`), YAML files of values,
``key=value`` overrides (:mod:`purerl.config.loading`), every value checked before anything is built
(:mod:`purerl.config.validation`). Importing this package imports neither torch nor transformers, so a
config error comes back at once.
"""

from __future__ import annotations

from pathlib import Path

from purerl.config.loading import ConfigError, load_dataclass
from purerl.config.schema import (
    AlgoConfig,
    DataSection,
    PolicyConfig,
    PRMConfig,
    PRMStagesConfig,
    RolloutConfig,
    RunConfig,
    SFTConfig,
    TinyModelConfig,
    TrainConfig,
    save_config,
    task_name,
    to_dict,
)

__all__ = [
    "AlgoConfig",
    "ConfigError",
    "DataSection",
    "PRMConfig",
    "PRMStagesConfig",
    "PolicyConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "TinyModelConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "task_name",
    "to_dict",
    "validate",
]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a YAML file (or the defaults), apply ``key=value`` overrides, validate."""
    cfg = load_dataclass(TrainConfig, path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Check every value of ``cfg`` (raises :class:`ConfigError` naming the key); builds nothing."""
    from purerl.config.validation import check

    check(cfg)
