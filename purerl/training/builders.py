"""Build the policy, the PRM, the task and the rollout backend a validated config asks for.

Built-in models are trained once and cached, or shipped (:mod:`purerl.models.builtin`). The PRM comes
from the one loader (:func:`purerl.prm.loading.load_prm`); each task and rollout backend builds itself
from the config, looked up by name in :mod:`purerl.registry`.
"""

from __future__ import annotations

from purerl.config import TrainConfig, task_name
from purerl.config.validation import check_machine
from purerl.models.builtin import policy_path
from purerl.models.loading import load_policy
from purerl.prm.loading import load_prm
from purerl.registry import ROLLOUT_BACKENDS, TASKS


def build_policy(cfg: TrainConfig):
    """``(model, tokenizer)`` of the policy, in eval mode; with ``lora_rank`` a peft model whose
    base weights are frozen. First the machine check of the whole config (devices, model paths:
    :func:`purerl.config.validation.check_machine`), so that a bad ``prm.path`` answers before the policy loads."""
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


def build_task(cfg: TrainConfig):
    """The task of a config (``data.task``; see :func:`purerl.config.task_name`)."""
    return TASKS.resolve(task_name(cfg)).from_config(cfg)


def build_prm(cfg: TrainConfig, task):
    """The PRM of ``cfg.prm`` for ``task`` through the one loader (after
    :func:`purerl.config.validation.check_machine`)."""
    check_machine(cfg)
    return load_prm(cfg.prm, task, builtin=cfg)


def build_rollout(cfg: TrainConfig, model, tokenizer):
    """The generation backend named by ``cfg.rollout.backend`` around the policy."""
    backend = ROLLOUT_BACKENDS.resolve(cfg.rollout.backend)
    return backend(model, tokenizer, context=cfg.rollout.context) if cfg.rollout.context else backend(model, tokenizer)
