"""Per-token KL estimators between the policy and a reference, from sampled-token log-probs.

Registered by name in :data:`purerl.registry.KL_ESTIMATORS` (``k1``, ``k2``, ``k3`` / ``low_var_kl``, ...).
"""

from __future__ import annotations

import torch

from purerl.registry import KL_ESTIMATORS

__all__ = ["KL_ESTIMATORS", "kl_abs", "kl_k1", "kl_k2", "kl_k3", "kl_penalty"]


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


def kl_abs(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return (logprobs - ref_logprobs).abs()


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    # Schulman's unbiased, always-positive estimator; clamped as verl's "low_var_kl" so that one
    # token whose probability collapsed cannot blow up the loss.
    log_ratio = torch.clamp(ref_logprobs - logprobs, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, min=-10.0, max=10.0)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled-token log-probs.

    ``k1 = log p - log q``; ``k2 = (log p - log q)^2 / 2``; ``k3`` (alias ``low_var_kl``)
    ``= q/p - log(q/p) - 1`` with ``log(q/p)`` clamped to [-20, 20] and the result to [-10, 10].

    Args:
        logprobs: (B, T) policy log-probs of the sampled tokens.
        ref_logprobs: (B, T) reference log-probs of the same tokens.
        estimator: one of ``KL_ESTIMATORS``.
    Returns:
        (B, T) per-token estimates (mask them yourself).
    """
    fn = KL_ESTIMATORS.resolve(estimator)
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"shape mismatch: logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)}")
    return fn(logprobs, ref_logprobs)
