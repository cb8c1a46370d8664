"""Policy loss (PPO-clip), loss aggregation, log-probs and entropy from logits.

Pure tensor functions; shapes follow the notation of :mod:`purerl.algo.credit` (B responses, T tokens,
V vocabulary entries; ``response_mask`` (B, T) with 1 = counts).
"""

from __future__ import annotations

import torch

LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate_loss(
    loss_mat: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str = "token_mean",
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    Modes: ``token_mean`` (every token of the batch weighs the same; PURE's choice),
    ``seq_mean_token_sum`` / ``seq_mean_token_mean`` (per-response sum / mean, then the mean over
    responses), ``seq_mean_token_sum_norm`` (per-response sum divided by ``max_len``, Dr. GRPO).

    Args:
        loss_mat: (B, T) per-token loss.
        response_mask: (B, T).
        mode: one of ``LOSS_AGGREGATIONS``.
        max_len: N for ``seq_mean_token_sum_norm`` (defaults to T).
    Returns:
        scalar tensor.
    """
    mask = response_mask.to(loss_mat.dtype)
    kept = torch.where(response_mask.bool(), loss_mat, torch.zeros_like(loss_mat))
    if mode == "token_mean":
        return kept.sum() / mask.sum().clamp(min=1)
    per_seq_sum = kept.sum(-1)
    if mode == "seq_mean_token_sum":
        per_seq = per_seq_sum
    elif mode == "seq_mean_token_mean":
        per_seq = per_seq_sum / mask.sum(-1).clamp(min=1)
    elif mode == "seq_mean_token_sum_norm":
        per_seq = per_seq_sum / (loss_mat.shape[-1] if max_len is None else max_len)
    else:
        raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {LOSS_AGGREGATIONS}")
    return per_seq.mean() if per_seq.numel() else per_seq.sum()


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio: float = 0.2,
    clip_ratio_high: float | None = None,
    loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate: ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the current policy (with grad).
        old_logprobs: (B, T) the same under the policy that sampled them.
        advantages: (B, T).
        response_mask: (B, T).
        clip_ratio: eps (0.2 in PURE); ``clip_ratio_high`` overrides the upper side (DAPO clip-higher).
        loss_agg: see :func:`aggregate_loss`.
    Returns:
        ``(loss, metrics)``: a scalar loss and detached scalars ``clip_frac`` (share of tokens whose
        clipped term was taken), ``approx_kl`` (mean of ``old - new`` log-probs, k1) and
        ``ratio_mean``.
    """
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + high)
    loss_mat = torch.maximum(unclipped, clipped)
    loss = aggregate_loss(loss_mat, response_mask, loss_agg)
    mask = response_mask.bool()
    count = mask.sum().clamp(min=1)
    with torch.no_grad():
        metrics = {
            "clip_frac": ((clipped > unclipped) & mask).sum() / count,
            "approx_kl": torch.where(mask, -log_ratio, torch.zeros_like(log_ratio)).sum() / count,
            "ratio_mean": torch.where(mask, ratio, torch.zeros_like(ratio)).sum() / count,
        }
    return loss, metrics


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each label token: ``logits[label] - logsumexp(logits)``.

    Args:
        logits: (B, T, V).
        labels: (B, T) token ids.
    Returns:
        (B, T), in the dtype of ``logits``.
    """
    picked = logits.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: ``logsumexp(z) - sum softmax(z) z``.

    Args:
        logits: (B, T, V).
    Returns:
        (B, T).
    """
    probs = torch.softmax(logits, dim=-1)
    # -inf logits (masked vocabulary) have probability 0 and add nothing, not 0 * -inf = NaN.
    weighted = torch.where(probs > 0, probs * logits, torch.zeros_like(logits))
    return torch.logsumexp(logits, dim=-1) - weighted.sum(-1)
