"""PURE inside TRL's GRPOTrainer: accelerate (DDP, FSDP, DeepSpeed ZeRO, several nodes), vLLM rollouts,
PEFT adapters, TRL's logging, with purerl's PRM adapters and credit.

Needs the extra: ``pip install 'purerl[trl]'`` (the TRL release it is tested with). Run it with
``accelerate launch -m purerl.integrations.trl --config CONFIG.yaml`` (docs/scaling.md).
"""

from __future__ import annotations

try:
    import trl  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without the extra
    raise ImportError("purerl.integrations.trl needs TRL: pip install 'purerl[trl]'") from err

from purerl.integrations.trl.config import PureGRPOConfig, PureScriptArguments
from purerl.integrations.trl.data import VerifiableReward, build_dataset
from purerl.integrations.trl.trainer import PureGRPOTrainer

__all__ = ["PureGRPOConfig", "PureGRPOTrainer", "PureScriptArguments", "VerifiableReward", "build_dataset"]
