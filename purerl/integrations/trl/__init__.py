"""PURE inside TRL's GRPOTrainer (accelerate, vLLM, PEFT, TRL's logging), with purerl's PRM adapters and
credit, configured by the same purerl YAML as ``purerl train`` plus a ``trl:`` section.

Needs the extra: ``pip install 'purerl[trl]'`` (the TRL release it is tested with). Run it with
``python -m purerl.integrations.trl CONFIG.yaml [key=value ...]`` (or under ``accelerate launch``;
docs/scaling.md). Names are imported on first use, so that a config error answers before TRL loads.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PureGRPOTrainer": "purerl.integrations.trl.trainer",
    "TaskReward": "purerl.integrations.trl.data",
    "build_dataset": "purerl.integrations.trl.data",
    "build_trainer": "purerl.integrations.trl.__main__",
    "fixed_completions_credit": "purerl.integrations.trl.fixed",
    "grpo_config": "purerl.integrations.trl.config",
    "load_route_config": "purerl.integrations.trl.config",
    "startup_lines": "purerl.integrations.trl.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    except ImportError as err:
        if err.name and err.name.split(".")[0] == "trl":
            raise ImportError("purerl.integrations.trl needs TRL: pip install 'purerl[trl]'") from err
        raise
