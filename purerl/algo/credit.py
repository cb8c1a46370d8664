"""PURE credit assignment as pure tensor functions.

Tensors in, tensors out: nothing here imports a trainer, a config or does I/O, so any trainer (TRL,
verl, OpenRLHF, a custom loop) can call these functions directly.

Notation (one block, used by every docstring below):

- ``B``: responses in the batch, grouped ``K`` per prompt by ``group_ids`` (B,).
- ``S``: maximum number of steps of a response in the batch.
- ``T``: maximum number of response tokens in the batch.
- ``N``: the maximum generation length of the run (``max_len``); defaults to ``T``.
- ``response_mask`` (B, T): 1 where a response token exists (1 = counts; never a padding mask).
- ``step_rewards`` (B, S): PRM score ``r_j`` of each step; ``step_mask`` (B, S): True for real steps.
- ``step_ends`` (B, S): index in ``[0, T)`` of the last token of each step; strictly increasing over
  the real steps of a response (``purerl.pipeline.steps`` builds it).

Every function keeps the dtype and device of its floating-point inputs. This module holds the paper's
math only: masked statistics are in :mod:`purerl.algo.stats`, KL estimators in :mod:`purerl.algo.kl`, the PPO
loss and log-probs in :mod:`purerl.algo.losses`.
"""

from __future__ import annotations

import torch

from purerl.registry import DEFAULT_TEMPERATURE, TRANSFORMS

__all__ = [
    "DEFAULT_TEMPERATURE",
    "TRANSFORMS",
    "broadcast_steps_to_tokens",
    "combine_advantages",
    "group_baselines",
    "group_index",
    "leave_one_out_baseline",
    "min_transform",
    "process_returns",
    "pure_advantages",
    "response_values",
    "reverse_cumsum",
    "rloo_advantages",
    "soft_min_transform",
    "step_returns",
    "sum_transform",
    "transform_step_rewards",
]

# --------------------------------------------------------------------------------------------------
# Step-reward transforms (PURE Eq. 3-5)
# --------------------------------------------------------------------------------------------------


def soft_min_transform(rewards: torch.Tensor, step_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    # PURE Eq. 5: r*_j = softmax(-r / T)_j * r_j over the real steps of the response.
    if temperature <= 0:
        raise ValueError(f"soft_min needs temperature > 0, got {temperature}; use mode='min' for T -> 0")
    neg_inf = torch.finfo(rewards.dtype).min
    logits = torch.where(step_mask, -rewards / temperature, torch.full_like(rewards, neg_inf))
    weights = torch.softmax(logits, dim=-1) * step_mask  # a row with no step: uniform * 0 = 0
    return weights * rewards


def min_transform(rewards: torch.Tensor, step_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    # PURE Eq. 3-4 (the T -> 0+ limit of Eq. 5): only the first step of minimum reward keeps it.
    big = torch.full_like(rewards, torch.inf)
    worst = torch.where(step_mask, rewards, big).argmin(dim=-1, keepdim=True)  # first minimum
    one_hot = torch.zeros_like(step_mask).scatter_(-1, worst, True) & step_mask
    return torch.where(one_hot, rewards, torch.zeros_like(rewards))


def sum_transform(rewards: torch.Tensor, step_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    # The canonical sum-form: every step keeps its reward (kept for the paper's ablation).
    return rewards


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def transform_step_rewards(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    mode: str,
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """Transform PRM step rewards into the rewards that credit assignment places on tokens.

    Modes: ``"soft_min"`` (PURE Eq. 5, ``softmax(-r/temperature) * r`` over the real steps), ``"min"``
    (the T -> 0+ limit: the first step of minimum reward keeps its reward, every other step gets 0),
    ``"sum"`` (``r`` unchanged). Padded steps contribute nothing whatever they hold (NaN included),
    and a response with no real step gives zeros.

    Args:
        step_rewards: (B, S) raw PRM scores.
        step_mask: (B, S) True (or 1) for real steps.
        mode: a name in ``TRANSFORMS`` (required: there is no default credit mode).
        temperature: soft-min temperature (0.1 in the paper); ignored by ``min`` and ``sum``.
    Returns:
        (B, S) transformed step rewards, 0 on padded steps.

    >>> r = torch.tensor([[0.9, -0.5, 0.2]]); m = torch.ones(1, 3, dtype=torch.bool)
    >>> transform_step_rewards(r, m, mode="min")
    tensor([[ 0.0000, -0.5000,  0.0000]])
    """
    transform = TRANSFORMS.resolve(mode)
    _check_same_shape(step_rewards=step_rewards, step_mask=step_mask)
    mask = step_mask.bool()
    clean = torch.where(mask, step_rewards, torch.zeros_like(step_rewards))
    if clean.shape[-1] == 0:
        return clean
    out = transform(clean, mask, temperature)
    return torch.where(mask, out, torch.zeros_like(out))


# --------------------------------------------------------------------------------------------------
# Returns
# --------------------------------------------------------------------------------------------------


def reverse_cumsum(values: torch.Tensor) -> torch.Tensor:
    """``out[..., t] = sum_{u >= t} values[..., u]`` along the last dimension; shape unchanged."""
    return values.flip(-1).cumsum(-1).flip(-1)


def step_returns(step_rewards: torch.Tensor, step_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Discounted future sum over steps: ``R_j = sum_{k >= j} gamma^(k - j) r_k`` over real steps.

    Args:
        step_rewards: (B, S) (usually already transformed).
        step_mask: (B, S).
        gamma: per-step discount (1.0 in PURE; the sum-form ablation may discount).
    Returns:
        (B, S) step returns, 0 on padded steps.
    """
    mask = step_mask.bool()
    r = torch.where(mask, step_rewards, torch.zeros_like(step_rewards))
    if gamma == 1.0:
        out = reverse_cumsum(r)
    else:
        # Padded steps sit after the real ones, so the step index is also the exponent.
        s = r.shape[-1]
        idx = torch.arange(s, device=r.device)
        power = (idx[None, :] - idx[:, None]).to(r.dtype)  # [j, k] = k - j
        discount = torch.where(power >= 0, torch.pow(gamma, power), torch.zeros_like(power))
        out = r @ discount.T
    return torch.where(mask, out, torch.zeros_like(out))


def broadcast_steps_to_tokens(
    step_values: torch.Tensor, step_ends: torch.Tensor, step_mask: torch.Tensor, num_tokens: int
) -> torch.Tensor:
    """Give every token the value of the step it belongs to.

    Token ``t`` belongs to the first real step ``j`` with ``step_ends[j] >= t``; tokens after the
    last real step's end get 0.

    Args:
        step_values: (B, S).
        step_ends: (B, S) long, strictly increasing over real steps.
        step_mask: (B, S).
        num_tokens: T.
    Returns:
        (B, T).
    """
    b, _s = step_values.shape
    mask = step_mask.bool()
    # Padded ends go past every token so that searchsorted never lands on them before a real step.
    ends = torch.where(mask, step_ends.long(), torch.full_like(step_ends.long(), num_tokens + 1))
    positions = torch.arange(num_tokens, device=step_values.device).expand(b, num_tokens).contiguous()
    step_of_token = torch.searchsorted(ends.contiguous(), positions)  # (B, T) in [0, S]
    padded = torch.cat([step_values, torch.zeros(b, 1, dtype=step_values.dtype, device=step_values.device)], 1)
    padded_mask = torch.cat([mask, torch.zeros(b, 1, dtype=torch.bool, device=mask.device)], 1)
    values = padded.gather(1, step_of_token)
    return torch.where(padded_mask.gather(1, step_of_token), values, torch.zeros_like(values))


def process_returns(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    step_ends: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    mode: str,
    temperature: float = DEFAULT_TEMPERATURE,
    token_penalty: torch.Tensor | None = None,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Process return ``G_{i,t}``: the sum of token rewards from ``t`` to the end of the response.

    Token rewards are the transformed step rewards on each step's last token plus ``token_penalty``
    on every token (DESIGN section 2). With ``mode="min"`` this is ``r_w`` up to the end of the worst
    step and 0 after it (PURE Eq. 4).

    Args:
        step_rewards, step_mask, step_ends: (B, S).
        response_mask: (B, T).
        mode, temperature: as in :func:`transform_step_rewards`.
        token_penalty: optional (B, T) per-token reward, e.g. ``-beta * kl``; masked by response_mask.
        gamma: per-step discount of the step-reward part (1.0 in PURE).
    Returns:
        (B, T) returns, 0 outside ``response_mask``.
    """
    _check_same_shape(step_rewards=step_rewards, step_mask=step_mask, step_ends=step_ends)
    if step_rewards.shape[0] != response_mask.shape[0]:
        raise ValueError(
            f"batch size mismatch: step_rewards {tuple(step_rewards.shape)} vs "
            f"response_mask {tuple(response_mask.shape)}"
        )
    num_tokens = response_mask.shape[-1]
    transformed = transform_step_rewards(step_rewards, step_mask, mode=mode, temperature=temperature)
    per_step = step_returns(transformed, step_mask, gamma=gamma)
    returns = broadcast_steps_to_tokens(per_step, step_ends, step_mask, num_tokens)
    mask = response_mask.bool()
    if token_penalty is not None:
        _check_same_shape(token_penalty=token_penalty, response_mask=response_mask)
        penalty = torch.where(mask, token_penalty, torch.zeros_like(token_penalty)).to(returns.dtype)
        returns = returns + reverse_cumsum(penalty)
    return torch.where(mask, returns, torch.zeros_like(returns))


# --------------------------------------------------------------------------------------------------
# Baselines and advantages
# --------------------------------------------------------------------------------------------------


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary (unsorted, non-contiguous) group ids to 0..G-1."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    return inverse, num_groups


def leave_one_out_baseline(
    values: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``values`` over the *other* valid members of each response's group (RLOO).

    A response with no other valid member in its group gets baseline 0.

    Args:
        values: (B,) one value per response; entries where ``valid`` is False may hold NaN.
        group_ids: (B,) any integer ids; need not be sorted or contiguous.
        valid: optional (B,) bool; only valid members enter the other responses' baselines.
    Returns:
        (B,) baselines.
    """
    if values.shape != group_ids.shape:
        raise ValueError(f"values {tuple(values.shape)} and group_ids {tuple(group_ids.shape)} differ")
    valid = torch.ones_like(values, dtype=torch.bool) if valid is None else valid.bool()
    index, num_groups = group_index(group_ids)
    clean = torch.where(valid, values, torch.zeros_like(values))
    weight = valid.to(values.dtype)
    totals = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, clean)
    counts = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, weight)
    others_sum = totals[index] - clean
    others_count = counts[index] - weight
    return torch.where(others_count > 0, others_sum / others_count.clamp(min=1), torch.zeros_like(values))


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Plain RLOO on one scalar reward per response: ``r_i - mean_{k != i in group} r_k``.

    NaN rewards mean "no reward for this response" (e.g. no ground truth): they get advantage 0 and
    stay out of their group's baselines.

    Args:
        rewards: (B,).
        group_ids: (B,).
    Returns:
        (B,) advantages.
    """
    valid = ~torch.isnan(rewards)
    baseline = leave_one_out_baseline(rewards, group_ids, valid)
    adv = rewards - baseline
    return torch.where(valid, adv, torch.zeros_like(adv))


def pure_advantages(
    step_rewards: torch.Tensor,
    step_mask: torch.Tensor,
    step_ends: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    verifiable_rewards: torch.Tensor | None = None,
    *,
    mode: str,
    temperature: float = DEFAULT_TEMPERATURE,
    vr_coef: float = 1.0,
    max_len: int | None = None,
    token_penalty: torch.Tensor | None = None,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PURE advantages: process returns with a token-level RLOO baseline, plus RLOO on VR.

    Process part (PURE section 3.4): ``b_i = 1/(K-1) * sum_{k != i} (1/N) * sum_t G_{k,t}`` over
    the other responses of the group, ``A^p_{i,t} = G_{i,t} - b_i``. Dividing by the run's maximum
    length ``N`` rather than each response's own length, and using a token-level rather than a
    per-step baseline, are deliberate: a per-step baseline pays answers with fewer steps and the
    policy learns to stop writing separators (PURE section 5.1, case 2).
    Verifiable part: ``A^v_i = vr_coef * (r^v_i - mean_{k != i} r^v_k)`` on every token; NaN in
    ``verifiable_rewards`` means the prompt has no ground truth, so no VR term. A group of one has
    baseline 0. Empty responses (no real step) stay in their group with return 0.

    Args:
        step_rewards: (B, S) PRM step scores.
        step_mask: (B, S) True for real steps.
        step_ends: (B, S) index of each step's last token.
        response_mask: (B, T) 1 for response tokens.
        group_ids: (B,) prompt group of each response; any order, any integer ids.
        verifiable_rewards: optional (B,) 1.0 correct, 0.0 wrong, NaN no ground truth.
        mode, temperature: see :func:`transform_step_rewards`.
        vr_coef: weight of the verifiable advantage.
        max_len: N, the run's maximum generation length (defaults to T).
        token_penalty: optional (B, T) per-token reward added before the returns (``-beta * kl``).
        gamma: per-step discount of the process return (1.0 in PURE).
    Returns:
        ``(advantages, returns)``, both (B, T) and 0 outside ``response_mask``; ``returns`` are the
        process returns ``G`` (without the verifiable part).
    """
    if group_ids.shape != (response_mask.shape[0],):
        raise ValueError(f"group_ids must have shape (B,) = ({response_mask.shape[0]},), got {tuple(group_ids.shape)}")
    if verifiable_rewards is not None and verifiable_rewards.shape != group_ids.shape:
        shape = tuple(verifiable_rewards.shape)
        raise ValueError(f"verifiable_rewards must have shape (B,) = {tuple(group_ids.shape)}, got {shape}")
    returns = process_returns(step_rewards, step_mask, step_ends, response_mask, mode=mode, temperature=temperature,
                              token_penalty=token_penalty, gamma=gamma)  # fmt: skip
    values = response_values(returns, max_len)
    baseline, vr_advantages = group_baselines(values, group_ids, verifiable_rewards)
    return combine_advantages(returns, response_mask, baseline, vr_advantages, vr_coef), returns


def response_values(returns: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Each response's value in the process baseline: ``(1/N) * sum_t G_{i,t}`` (PURE section 3.4).

    Args:
        returns: (B, T) process returns, 0 outside the response.
        max_len: N (defaults to T).
    Returns:
        (B,). The sum runs over the T columns given, so callers that compare batches padded to
        different widths pad them to one width first (``purerl.pipeline.rewards`` does across processes).
    """
    n = returns.shape[-1] if max_len is None else max_len
    if n <= 0:
        raise ValueError(f"max_len must be positive, got {n}")
    return returns.sum(dim=-1) / n


def group_baselines(
    values: torch.Tensor, group_ids: torch.Tensor, verifiable_rewards: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The group terms of PURE's advantage: the leave-one-out baseline of the response values, and the
    RLOO advantage of the verifiable rewards (None without them).

    These need only per-response scalars of the other members of each group, so a distributed caller
    gathers ``values``, ``group_ids`` and ``verifiable_rewards`` (three numbers a response), calls this
    on the whole batch and keeps its own rows.

    Args:
        values: (B,) from :func:`response_values`.
        group_ids: (B,).
        verifiable_rewards: optional (B,), NaN where a prompt has no ground truth.
    Returns:
        ``(baseline, vr_advantages)``, each (B,).
    """
    baseline = leave_one_out_baseline(values, group_ids)
    if verifiable_rewards is None:
        return baseline, None
    return baseline, rloo_advantages(verifiable_rewards.to(values.dtype), group_ids)


def combine_advantages(
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    baseline: torch.Tensor,
    vr_advantages: torch.Tensor | None = None,
    vr_coef: float = 1.0,
) -> torch.Tensor:
    """``A_{i,t} = (G_{i,t} - b_i + vr_coef * A^v_i) * response_mask``: (B, T) from (B, T) returns and (B,)
    group terms (:func:`group_baselines`)."""
    advantages = returns - baseline[:, None]
    if vr_advantages is not None:
        advantages = advantages + vr_coef * vr_advantages[:, None]
    mask = response_mask.bool()
    return torch.where(mask, advantages, torch.zeros_like(advantages))
