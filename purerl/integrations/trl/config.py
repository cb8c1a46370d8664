"""PURE's settings as TRL configuration: a ``GRPOConfig`` with the credit and PRM keys, and the script
arguments of ``python -m purerl.integrations.trl`` (policy, task or dataset). Both are dataclasses that
TRL's own parser (``TrlParser``) reads from YAML (``--config``) and from ``--key value`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from purerl.config.validation import REWARDS, SCORE_MAPS
from purerl.registry import DEFAULT_TEMPERATURE, PRMS, TRANSFORMS


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class PureGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus PURE: process rewards from a PRM, min-form credit, verifiable rewards on a
    share of the prompts. TRL's own keys keep their meaning (batch sizes, ``num_generations`` = K,
    ``max_completion_length`` = N, ``beta`` = the KL coefficient, ``epsilon`` = the PPO clip, vLLM,
    DeepSpeed); the advantages TRL computes from ``reward_funcs`` are replaced by PURE's token-level ones."""

    pure_reward: str = field(default="prm+vr", metadata=_help("prm, vr or prm+vr (as purerl's algo.reward)"))
    credit_mode: str = field(default="min", metadata=_help("min, soft_min or sum (PURE Eq. 3-5)"))
    credit_temperature: float = field(default=DEFAULT_TEMPERATURE, metadata=_help("soft_min temperature"))
    vr_coef: float = field(default=1.0, metadata=_help("weight of the verifiable (RLOO) advantage"))
    vr_fraction: float = field(
        default=0.1, metadata=_help("share of prompts whose ground truth gives verifiable rewards (prm+vr)")
    )
    ground_truth_column: str = field(default="answer", metadata=_help("dataset column of the gold answer"))
    problem_column: str = field(
        default="problem", metadata=_help("dataset column of the bare problem the PRM reads (else the prompt)")
    )
    step_separator: str = field(default="\n\n", metadata=_help("step separator of the policy's completions"))
    prm_kind: str = field(
        default="token_classification", metadata=_help("token_classification, qwen_prm, math_shepherd or rule")
    )
    prm_path: str | None = field(default=None, metadata=_help("PRM folder or hub id (None: the built-in PRM)"))
    prm_dtype: str = field(default="float32", metadata=_help("PRM weights dtype"))
    prm_device: str | None = field(default=None, metadata=_help("PRM device (None: this process's device)"))
    prm_score_map: str = field(default="none", metadata=_help("none, or affine: map [0, 1] scores to [-1, 1]"))
    prm_separator: str = field(default="\n", metadata=_help("token_classification marker after each step"))
    prm_trust_remote_code: bool = field(default=False, metadata=_help("run the PRM repository's own code"))

    def __post_init__(self):
        super().__post_init__()
        checks = {
            "pure_reward": (self.pure_reward, REWARDS),
            "credit_mode": (self.credit_mode, TRANSFORMS),
            "prm_kind": (self.prm_kind, PRMS),
            "prm_score_map": (self.prm_score_map, SCORE_MAPS),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{key}={value!r}: choose one of {sorted(allowed)}")
        if self.credit_mode == "soft_min" and not self.credit_temperature > 0:
            raise ValueError(f"credit_temperature must be > 0 for credit_mode=soft_min, got {self.credit_temperature}")
        if not 0.0 <= self.vr_fraction <= 1.0:
            raise ValueError(f"vr_fraction must lie in [0, 1], got {self.vr_fraction}")
        if self.pure_reward != "vr" and self.prm_kind in ("qwen_prm", "math_shepherd") and not self.prm_path:
            raise ValueError(f"prm_kind={self.prm_kind} needs prm_path (a folder or hub id of such a model)")
        if self.mask_truncated_completions:
            raise ValueError(
                "mask_truncated_completions is not supported with PURE: a truncated completion still has steps the "
                "PRM scores and a value in its group's baseline (PURE's length signals, e.g. pure/response/truncated, "
                "watch for completions that run into the cap)"
            )
        if not self.max_completion_length:
            raise ValueError("max_completion_length must be set: it is N, which normalises PURE's baseline")


@dataclass
class PureScriptArguments:
    """What ``python -m purerl.integrations.trl`` trains on and with."""

    model_name_or_path: str | None = field(
        default=None, metadata=_help("policy folder or hub id (None: the built-in task's warm-started policy)")
    )
    model_dtype: str = field(default="float32", metadata=_help("policy weights dtype"))
    task: str = field(default="arithmetic", metadata=_help("arithmetic (built in) or dataset (data_path)"))
    data_path: str | None = field(default=None, metadata=_help("a .jsonl / .json / .parquet file or datasets folder"))
    data_question: str | None = field(default=None, metadata=_help("question field (default: purerl.io.data's)"))
    data_answer: str | None = field(default=None, metadata=_help("answer field (default: purerl.io.data's)"))
    template: str = field(default="raw", metadata=_help("raw (the prompt as text) or chat (a user message)"))
    system: str | None = field(default=None, metadata=_help("system message of the chat template"))
    num_problems: int = field(default=4096, metadata=_help("built-in task: training problems to draw"))
    problems_seed: int = field(default=0, metadata=_help("built-in task: seed of the problems drawn"))

    def __post_init__(self):
        if self.task not in ("arithmetic", "dataset"):
            raise ValueError(f"task={self.task!r}: choose one of ['arithmetic', 'dataset']")
        if self.task == "dataset" and not self.data_path:
            raise ValueError("task=dataset needs data_path")
        if self.template not in ("raw", "chat"):
            raise ValueError(f"template={self.template!r}: choose one of ['chat', 'raw']")
