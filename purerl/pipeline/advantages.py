"""Credit for the pipeline: the settings (one builder from a config), the narrow record credit reads,
and PURE advantages on one process or across the processes of a distributed batch
(:func:`compute_credit`). The math itself is :mod:`purerl.algo.credit`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from purerl.algo.credit import combine_advantages, group_baselines, process_returns, pure_advantages, response_values
from purerl.algo.kl import kl_penalty
from purerl.algo.stats import masked_moments, masked_whiten, whiten_from_moments

if TYPE_CHECKING:
    from purerl.config import AlgoConfig

__all__ = ["CreditInputs", "CreditSettings", "ProcessGroup", "compute_credit"]


@dataclass(frozen=True)
class CreditSettings:
    """How rewards become advantages: the credit keys of a config's ``algo`` section as plain values.
    Every field is required: build it with :meth:`from_algo`, the one place that maps a config onto
    credit (``purerl train``, the TRL trainer and the verl estimator all call it), so that no engine
    can carry defaults of its own."""

    mode: str
    """Credit mode (``purerl.registry.TRANSFORMS``): ``min``, ``soft_min`` or ``sum``."""
    temperature: float
    """soft_min temperature (PURE Eq. 5)."""
    vr_coef: float
    """Weight of the verifiable (RLOO) advantage."""
    max_len: int | None
    """N, the run's maximum response length, which normalises the process baseline (None: T)."""
    kl_coef: float
    """Weight of the KL-to-reference penalty."""
    kl_estimator: str
    """KL estimator (``purerl.registry.KL_ESTIMATORS``)."""
    kl_in_reward: bool
    """Put ``-kl_coef * kl`` into the token rewards (before returns) instead of leaving it to the loss."""
    process_rewards: bool
    """False: verifiable rewards only (step rewards take no part in the advantages)."""
    whiten: bool
    """Whiten the advantages over the batch's response tokens after the baselines, the verifiable part
    included (the authors' ``adv_norm``: CJReinforce/PURE, branch verl, verl/trainer/ppo/core_algos.py,
    ``compute_rloo_outcome_advantage``, lines 244-252); across processes with three all-reduced numbers."""

    @classmethod
    def from_algo(cls, algo: AlgoConfig, max_len: int | None) -> CreditSettings:
        """The settings of a config's ``algo`` section (:class:`purerl.config.AlgoConfig`, whose
        defaults are the paper's); ``max_len`` is N (``rollout.max_new_tokens``)."""
        return cls(
            mode=algo.mode, temperature=algo.temperature, vr_coef=algo.vr_coef, max_len=max_len,
            kl_coef=algo.kl_coef, kl_estimator=algo.kl_estimator, kl_in_reward=algo.kl_in_reward,
            process_rewards=algo.reward != "vr", whiten=algo.whiten,
        )  # fmt: skip


@dataclass
class CreditInputs:
    """What credit reads, and nothing more (an engine that measured its steps elsewhere, like verl's
    estimator, builds this directly; :meth:`RewardBatch.credit_inputs` builds it from the pipeline's record).

    Attributes:
        step_rewards: (B, S) step scores, 0 on padded and unscored steps.
        scored_mask: (B, S) bool, the steps that take part in credit.
        step_ends: (B, S) long, each step's last token among the response tokens.
        response_mask: (B, T) 1 on response tokens.
        group_ids: (B,) prompt group of each response.
        verifiable_rewards: (B,) 1 / 0, NaN without ground truth; None: no verifiable rewards.
        logprobs, ref_logprobs: (B, T) for the KL penalty (None: no reference).
        token_penalty: (B, T) rewards the engine adds on every token itself (verl's KL penalty).
    """

    step_rewards: torch.Tensor
    scored_mask: torch.Tensor
    step_ends: torch.Tensor
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    verifiable_rewards: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    token_penalty: torch.Tensor | None = None


@dataclass(frozen=True)
class ProcessGroup:
    """How one process of a distributed run sees the others, for credit whose group baselines span
    processes (a prompt's K responses may sit on different processes).

    ``all_gather(x)`` returns the (n, k) tensors of every process concatenated in rank order (n the same
    on every process, as TRL and verl batches are); ``rank`` is this process's index.
    """

    all_gather: Callable[[torch.Tensor], torch.Tensor]
    rank: int


def compute_credit(inputs: CreditInputs, settings: CreditSettings, group: ProcessGroup | None = None):
    """PURE advantages (:func:`purerl.algo.credit.pure_advantages`) from what credit reads.

    Returns ``(kl, advantages, returns)``: kl (B, T) or None without a reference, advantages and returns
    (B, T). With ``group``, ``group_ids`` must be the same ids on every process, the baselines span every
    process's responses (:func:`_distributed_credit`) and whitening uses the count, sum and sum of
    squares of every process's advantages; the result equals a one-process call on the whole batch.
    """
    s, x = settings, inputs
    kl = None
    if x.ref_logprobs is not None:
        kl = kl_penalty(x.logprobs, x.ref_logprobs, s.kl_estimator)
    step_mask = x.scored_mask if s.process_rewards else torch.zeros_like(x.scored_mask)
    penalty = -s.kl_coef * kl if (kl is not None and s.kl_in_reward) else x.token_penalty
    args = (x.step_rewards, step_mask, x.step_ends, x.response_mask.float())
    if group is None:
        advantages, returns = pure_advantages(
            *args, x.group_ids, x.verifiable_rewards, mode=s.mode, temperature=s.temperature,
            vr_coef=s.vr_coef, max_len=s.max_len, token_penalty=penalty,
        )  # fmt: skip
        if s.whiten:
            advantages = masked_whiten(advantages, x.response_mask)
        return kl, advantages, returns
    advantages, returns = _distributed_credit(*args, x, s, penalty, group)
    if s.whiten:
        moments = group.all_gather(masked_moments(advantages, x.response_mask)[None]).sum(0)
        advantages = whiten_from_moments(advantages, x.response_mask, moments)
    return kl, advantages, returns


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


def _distributed_credit(step_rewards, step_mask, step_ends, response_mask, inputs, s, penalty, group):
    """PURE advantages of this process's responses, with group baselines over every process.

    Communicated: one all-gather of two integers per process (its step and token widths) and one of
    three float64 numbers per response (its value ``(1/N) sum_t G``, its verifiable reward, its group
    id). Each process pads its tensors to the widths of the whole batch before computing, so every
    reduction runs over the same columns as a one-process run on the whole batch would: equal results
    to the last bit, not only within rounding.
    """
    local_s, local_t = step_rewards.shape[-1], response_mask.shape[-1]
    widths = group.all_gather(torch.tensor([[local_s, local_t]], dtype=torch.float64, device=step_rewards.device))
    width_s, width_t = (int(w) for w in widths.max(dim=0).values.tolist())
    returns = process_returns(
        _pad_to(step_rewards, width_s), _pad_to(step_mask, width_s), _pad_to(step_ends, width_s),
        _pad_to(response_mask, width_t), mode=s.mode, temperature=s.temperature,
        token_penalty=None if penalty is None else _pad_to(penalty, width_t),
    )  # fmt: skip
    values = response_values(returns, s.max_len)
    vr = inputs.verifiable_rewards
    as64 = values.to(torch.float64)  # exact for float32 values and for group ids below 2**53
    no_vr = torch.full_like(as64, float("nan"))
    mine = torch.stack([as64, no_vr if vr is None else vr.to(torch.float64), inputs.group_ids.to(torch.float64)], -1)
    every = group.all_gather(mine)
    rows = slice(group.rank * values.shape[0], (group.rank + 1) * values.shape[0])
    baseline, vr_advantages = group_baselines(
        every[:, 0].to(values.dtype), every[:, 2].long(), None if vr is None else every[:, 1].to(values.dtype)
    )
    vr_part = None if vr_advantages is None else vr_advantages[rows]
    advantages = combine_advantages(returns, _pad_to(response_mask, width_t), baseline[rows], vr_part, s.vr_coef)
    return advantages[:, :local_t], returns[:, :local_t]
