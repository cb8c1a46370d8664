"""Build the policy and the PRM a config asks for (built-in models are trained once and cached)."""

from __future__ import annotations

from pathlib import Path

from purerl.config import TrainConfig
from purerl.models import load_policy, load_prm_model
from purerl.prm import PRMS
from purerl.prm.builtin import adapted_prm, builtin_prm
from purerl.tasks import arithmetic
from purerl.warmstart import warm_start_policy


def builtin_policy_path(cfg: TrainConfig, refresh: bool = False) -> str:
    """The built-in task's warm-started tiny policy (trained when missing)."""
    return str(warm_start_policy(cfg.task, cfg.policy.size, cfg.policy.sft, refresh=refresh))


def policy_path(cfg: TrainConfig, refresh: bool = False) -> str:
    """The policy's folder: ``policy.path``, or the built-in warm start."""
    return cfg.policy.path or builtin_policy_path(cfg, refresh)


def prm_path(cfg: TrainConfig, refresh: bool = False, policy: str | None = None) -> str:
    """The PRM's folder: ``prm.path``, or the built-in PRM (trained when missing) started from and
    trained on samples of ``policy`` (default: the built-in warm start, whatever ``policy.path`` says:
    the built-in PRM belongs to the built-in task)."""
    if cfg.prm.path:
        return cfg.prm.path
    p = cfg.prm
    policy_folder = Path(policy or builtin_policy_path(cfg))
    base = builtin_prm(cfg.task, p.size, p.train, p.data_error_rate, refresh=refresh,
                       init=policy_folder if p.init_from_policy else None, corrupt_rate=p.data_corrupt_rate,
                       separator=p.separator)  # fmt: skip
    if not (p.data_policy_samples and p.data_policy_share and p.adapt_steps):
        return str(base)
    return str(
        adapted_prm(base, policy_folder, cfg.task, p.data_error_rate, p.data_corrupt_rate, p.data_policy_samples,
                    p.data_policy_share, p.adapt_steps, p.adapt_lr, refresh=refresh, separator=p.separator,
                    seed=p.train.seed)
    )  # fmt: skip


def build_policy(cfg: TrainConfig):
    """``(model, tokenizer)`` of the policy, in eval mode; with ``lora_rank`` a peft model whose
    base weights are frozen."""
    p = cfg.policy
    model, tokenizer = load_policy(policy_path(cfg), dtype=p.dtype, device=p.device,
                                   trust_remote_code=p.trust_remote_code)  # fmt: skip
    if p.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=p.lora_rank, lora_alpha=p.lora_alpha, target_modules=list(p.lora_targets),
                          lora_dropout=0.0, task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, lora)
    return model.eval(), tokenizer


def load_prm(path: str, kind: str, *, dtype: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
             score_map: str = "none", separator: str = "\n"):  # fmt: skip
    """The adapter ``kind`` around the model in ``path``, loaded with the head its format uses."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

    if kind not in PRMS or kind == "rule":
        raise ValueError(
            f"unknown model-backed PRM kind {kind!r}; choose from token_classification, qwen_prm, math_shepherd"
        )
    auto_class = {
        "math_shepherd": AutoModelForCausalLM,
        # Qwen2.5-Math-PRM ships its model class as remote code (AutoModel); two-logit heads load without it
        "qwen_prm": AutoModel if trust_remote_code else AutoModelForTokenClassification,
    }.get(kind, AutoModelForTokenClassification)
    model, tokenizer = load_prm_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                      auto_class=auto_class)  # fmt: skip
    if kind == "token_classification":
        return PRMS[kind](model, tokenizer, separator=separator)
    return PRMS[kind](model, tokenizer, score_map=score_map)


def build_prm(cfg: TrainConfig, policy_tokenizer):
    """The PRM named by ``cfg.prm.kind``."""
    p = cfg.prm
    if p.kind == "rule":
        return PRMS["rule"](arithmetic.rule_checker)
    return load_prm(prm_path(cfg), p.kind, dtype=p.dtype, device=p.device, trust_remote_code=p.trust_remote_code,
                    score_map=p.score_map, separator=p.separator)  # fmt: skip


def build_task(cfg: TrainConfig):
    """The built-in arithmetic task, or a dataset's problems when ``data.train.path`` is set."""
    from purerl.tasks.dataset import ArithmeticTask, DatasetTask

    if cfg.data.train.path:
        return DatasetTask(cfg.data.train, cfg.data.heldout, cfg.run.eval_size, cfg.data.separator)
    return ArithmeticTask(cfg.task, cfg.run.eval_size)
