"""GRPO's outcome advantages, for comparisons with PURE (not part of the paper's method).

Pure tensor functions; notation as in :mod:`purerl.algo.credit`.
"""

from __future__ import annotations

import torch

from purerl.algo.credit import group_index

__all__ = ["grpo_advantages"]


def grpo_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO group-normalised outcome advantages, broadcast to tokens (for VR-only runs).

    ``A_i = (r_i - mean_g) / (std_g + eps)`` with the unbiased std over the group; a group of one gets
    mean 0 and std 1 (as verl does), so its advantage is its reward. NaN rewards get advantage 0 and
    stay out of their group's statistics.

    Args:
        rewards: (B,).
        group_ids: (B,).
        response_mask: (B, T).
        norm_by_std: divide by the group std (False gives Dr. GRPO's mean-centred advantage).
    Returns:
        (B, T) advantages, 0 outside ``response_mask``.
    """
    valid = ~torch.isnan(rewards)
    index, num_groups = group_index(group_ids)
    clean = torch.where(valid, rewards, torch.zeros_like(rewards))
    weight = valid.to(rewards.dtype)
    zeros = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)
    count = zeros.clone().index_add_(0, index, weight)
    mean = zeros.clone().index_add_(0, index, clean) / count.clamp(min=1)
    sq = zeros.clone().index_add_(0, index, weight * (clean - mean[index]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    single = count[index] <= 1
    mean_i = torch.where(single, torch.zeros_like(rewards), mean[index])
    std_i = torch.where(single, torch.ones_like(rewards), std[index])
    adv = clean - mean_i
    if norm_by_std:
        adv = adv / (std_i + eps)
    adv = torch.where(valid, adv, torch.zeros_like(adv))
    return adv[:, None] * response_mask.to(adv.dtype)
