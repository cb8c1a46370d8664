"""Masked statistics over tensors: sums, means, variances and whitening where a mask says what counts.

Pure tensor functions (``mask`` 1 = counts, never a padding mask); used by credit, losses and metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "auroc",
    "average_ranks",
    "masked_mean",
    "masked_moments",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "whiten_from_moments",
]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1; masked-out entries may hold NaN or inf.

    Args:
        values: any shape, e.g. (B, T).
        mask: same shape as ``values`` (bool or 0/1).
        dim: dimension to reduce; ``None`` reduces everything to a scalar.
    """
    kept = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1; 0 (not NaN) where the mask is empty.

    Args:
        values: any shape, e.g. (B, T).
        mask: same shape as ``values``.
        dim: dimension to reduce; ``None`` reduces everything to a scalar.
    """
    count = mask.to(values.dtype)
    count = count.sum() if dim is None else count.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1 (Bessel-corrected by default).

    Args:
        values: any shape, e.g. (B, T).
        mask: same shape as ``values``.
        dim: dimension to reduce; ``None`` reduces everything to a scalar.
        unbiased: divide by ``count - 1`` instead of ``count``; a single kept value gives 0.
    """
    mean = masked_mean(values, mask, dim)
    if dim is not None:
        mean = mean.unsqueeze(dim)
    sq = masked_sum((values - mean) ** 2, mask, dim)
    count = mask.to(values.dtype)
    count = count.sum() if dim is None else count.sum(dim=dim)
    denom = count - 1 if unbiased else count
    return sq / denom.clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Batch whitening over the kept entries: ``(x - mean) / sqrt(var + eps)``, zero where masked.

    Args:
        values: (B, T) or any shape.
        mask: same shape as ``values``.
        shift_mean: subtract the mean; with False only the scale changes (PPO's advantage whitening
            keeps the mean for some estimators).
    Returns:
        Tensor of the shape of ``values``, 0 outside ``mask``.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def masked_moments(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(3,) float64: the count, the sum and the sum of squares of the kept entries. Summed over the
    processes of a distributed batch (one all-reduce of three numbers), they whiten it exactly as one
    process would (:func:`whiten_from_moments`)."""
    kept = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device)).double()
    return torch.stack([mask.bool().sum().double(), kept.sum(), (kept * kept).sum()])


def whiten_from_moments(
    values: torch.Tensor, mask: torch.Tensor, moments: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """:func:`masked_whiten` with the mean and the (Bessel-corrected) variance taken from ``moments``
    (``[count, sum, sum of squares]``, e.g. summed over every process), in float64.

    Args:
        values: (B, T).
        mask: (B, T).
        moments: (3,) as :func:`masked_moments` returns.
    Returns:
        Tensor of the shape and dtype of ``values``, 0 outside ``mask``.
    """
    count, total, total_sq = moments.double().unbind()
    mean = total / count.clamp(min=1)
    var = (total_sq - count * mean * mean).clamp(min=0) / (count - 1).clamp(min=1)
    whitened = ((values.double() - mean) * torch.rsqrt(var + eps)).to(values.dtype)
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, tied values sharing the average of their ranks.

    >>> average_ranks([0.3, 0.1, 0.3, 0.7])
    [2.5, 1.0, 2.5, 4.0]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and values[order[end]] == values[order[start]]:
            end += 1
        for i in order[start:end]:
            ranks[i] = (start + 1 + end) / 2  # the mean of ranks start+1 .. end
        start = end
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Step-level AUROC of ``scores`` for telling correct steps (True) from wrong ones, ties counted
    half; NaN scores are left out; None without both kinds of step.

    >>> auroc([0.9, 0.4, 0.4, -0.2], [True, True, False, False])
    0.875
    """
    kept = [(s, ok) for s, ok in zip(scores, labels) if not math.isnan(s)]
    n_pos = sum(ok for _, ok in kept)
    n_neg = len(kept) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks([s for s, _ in kept])
    rank_sum = sum(r for r, (_, ok) in zip(ranks, kept) if ok)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
