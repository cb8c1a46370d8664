"""Build the policy, the PRM, the task and the rollout backend a validated config asks for.

Built-in models are trained once and cached (or shipped). Each PRM kind, task and rollout backend
builds itself from the config (``from_config``), looked up by name in :mod:`purerl.registry`.
"""

from __future__ import annotations

from pathlib import Path

from purerl.config import TrainConfig, task_name
from purerl.models import load_policy
from purerl.prm.builtin import adapted_prm, builtin_prm
from purerl.registry import PRMS, ROLLOUT_BACKENDS, TASKS
from purerl.validation import check_machine
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
    base weights are frozen. First the machine check of the whole config (devices, model paths:
    :func:`purerl.validation.check_machine`), so that a bad ``prm.path`` answers before the policy loads."""
    check_machine(cfg)
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
    cls = PRMS.resolve(kind)
    if not hasattr(cls, "load"):
        models = [k for k in PRMS.names() if hasattr(PRMS.resolve(k), "load")]
        raise ValueError(f"PRM kind {kind!r} has no model to load; choose a model-backed kind: {', '.join(models)}")
    return cls.load(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code, score_map=score_map,
                    separator=separator)  # fmt: skip


def engine_prm(kind: str, path: str | None, **options):
    """The PRM an engine integration (TRL, verl) asks for by kind and path: the ``rule`` checker of the
    built-in task, the model in ``path``, or, without a path, the built-in task's PRM."""
    if kind == "rule":
        from purerl.prm.rule import RulePRM
        from purerl.tasks import arithmetic

        return RulePRM(arithmetic.rule_checker)
    from purerl.config import load_config

    return load_prm(path or prm_path(load_config()), kind, **options)


def build_task(cfg: TrainConfig):
    """The task of a config (``data.task``; see :func:`purerl.config.task_name`)."""
    return TASKS.resolve(task_name(cfg)).from_config(cfg)


def build_prm(cfg: TrainConfig, task):
    """The PRM named by ``cfg.prm.kind``, built for ``task`` (after :func:`purerl.validation.check_machine`)."""
    check_machine(cfg)
    return PRMS.resolve(cfg.prm.kind).from_config(cfg, task)


def build_rollout(cfg: TrainConfig, model, tokenizer):
    """The generation backend named by ``cfg.rollout.backend`` around the policy."""
    backend = ROLLOUT_BACKENDS.resolve(cfg.rollout.backend)
    return backend(model, tokenizer, context=cfg.rollout.context) if cfg.rollout.context else backend(model, tokenizer)
