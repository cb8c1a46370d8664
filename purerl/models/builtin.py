"""Where the built-in models are: the warm-started policy and the built-in PRM of a config (each
trained once and cached, or shipped with the package; docs/builtin-models.md)."""

from __future__ import annotations

from pathlib import Path

from purerl.config import TrainConfig
from purerl.models.builtin_prm import adapted_prm, builtin_prm
from purerl.models.warmstart import warm_start_policy


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
