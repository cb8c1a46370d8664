"""The process-reward pipeline: what every engine does between sampling and the policy update.

``purerl train`` (:mod:`purerl.trainer`) calls these functions for its own loop, and an engine that
samples by itself (TRL, verl) calls the same ones after sampling, so that all of them turn the same
token ids into the same steps, rewards and advantages::

    response token ids --segment-->      texts, steps (StepBatch: step_ends, step_mask in policy tokens)
                       --grade-->        correct (final answers; None where none is found)
                       --score_steps-->  PRM step scores, step_rewards (B, S), scored_mask (B, S)
                       --verify-->       verifiable_rewards (B,): 1 / 0, NaN where no ground truth
    + log-probs        --assign_credit--> kl, advantages, returns (B, T) from purerl.credit
                       --batch_metrics--> the per-response metrics the hacking monitor reads

:func:`process_rewards` runs the first four in one call. Every function reads and writes one record,
:class:`RewardBatch`; each says which fields it writes, and none changes a field another one wrote
(a step the PRM could not score is left out of ``scored_mask``, never removed from ``steps``). No I/O
and no config object: plain arguments and :class:`CreditSettings`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from purerl.credit import (
    combine_advantages,
    group_baselines,
    process_returns,
    pure_advantages,
    response_values,
    transform_step_rewards,
)
from purerl.kl import kl_penalty
from purerl.monitor import response_metrics, tensor_stats
from purerl.registry import DEFAULT_TEMPERATURE
from purerl.stats import masked_mean, masked_whiten
from purerl.steps import DEFAULT_SEPARATOR, StepBatch, decode_with_offsets, segment_batch

__all__ = [
    "CreditSettings",
    "ProcessGroup",
    "RewardBatch",
    "assign_credit",
    "batch_metrics",
    "grade",
    "has_ground_truth",
    "process_rewards",
    "score_steps",
    "segment",
    "verifiable_rewards",
    "verify",
]


@dataclass(frozen=True)
class CreditSettings:
    """How rewards become advantages: the credit keys of a config's ``algo`` section as plain values."""

    mode: str
    """Credit mode (``purerl.registry.TRANSFORMS``): ``min``, ``soft_min`` or ``sum``; no default."""
    temperature: float = DEFAULT_TEMPERATURE
    """soft_min temperature (PURE Eq. 5)."""
    vr_coef: float = 1.0
    """Weight of the verifiable (RLOO) advantage."""
    max_len: int | None = None
    """N, the run's maximum response length, which normalises the process baseline (default: T)."""
    kl_coef: float = 0.0
    """Weight of the KL-to-reference penalty."""
    kl_estimator: str = "k3"
    """KL estimator (``purerl.registry.KL_ESTIMATORS``)."""
    kl_in_reward: bool = False
    """Put ``-kl_coef * kl`` into the token rewards (before returns) instead of leaving it to the loss."""
    process_rewards: bool = True
    """False: verifiable rewards only (step rewards take no part in the advantages)."""
    whiten: bool = False
    """Whiten the advantages over the batch's response tokens after the baselines, the verifiable part
    included (the authors' ``adv_norm``: CJReinforce/PURE, branch verl, verl/trainer/ppo/core_algos.py,
    ``compute_rloo_outcome_advantage``, lines 244-252)."""


@dataclass
class RewardBatch:
    """One batch of sampled responses, B of them, grouped K per prompt; filled phase by phase.

    Attributes:
        prompts: B prompts as the PRM reads them (the bare problem, no policy template).
        group_ids: (B,) prompt group of each response.
        response_mask: (B, T) 1 on response tokens (EOS included).
        truncated: (B,) bool, True where the response hit the length cap.
        texts: B decoded responses (:func:`segment`).
        steps: their :class:`purerl.steps.StepBatch` (:func:`segment`).
        correct: B final-answer grades, None where no answer was found (:func:`grade`).
        step_scores: the PRM's scores, a list per response (:func:`score_steps`; None without a PRM).
        step_rewards: (B, S) the scores packed, 0 on padded and unscored steps (:func:`score_steps`).
        scored_mask: (B, S) True for the steps that have a score: ``steps.step_mask`` less any step cut
            off at the PRM's length limit (:func:`score_steps`).
        verifiable_rewards: (B,) 1.0 / 0.0, NaN where the prompt carries no ground truth (:func:`verify`;
            None: no verifiable rewards at all).
        logprobs, ref_logprobs, entropy: (B, T) under the sampling policy and the reference (the caller).
        token_penalty: (B, T) rewards an engine adds on every token itself (verl's own KL penalty); when
            set, :func:`assign_credit` uses it instead of the KL it would compute from the log-probs.
        kl, advantages, returns: (B, T) (:func:`assign_credit`).
    """

    prompts: list[str]
    group_ids: torch.Tensor
    response_mask: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    texts: list[str] | None = None
    steps: StepBatch | None = None
    correct: list[bool | None] | None = None
    step_scores: list[list[float]] | None = None
    step_rewards: torch.Tensor | None = None
    scored_mask: torch.Tensor | None = None
    verifiable_rewards: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    token_penalty: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def unscored_steps(self) -> int:
        """Real steps the PRM gave no score (cut off at its length limit)."""
        if self.steps is None or self.scored_mask is None or self.step_scores is None:
            return 0
        return int((self.steps.step_mask & ~self.scored_mask).sum().item())


def has_ground_truth(prompt: str, fraction: float) -> bool:
    """Whether a prompt carries ground truth for VR: a fixed share of prompts, chosen by a hash of the
    text (the paper's PRM+VR gives verifiable rewards on 10% of the prompts)."""
    digest = hashlib.sha256(("vr:" + prompt).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < fraction * 10_000


def segment(
    batch: RewardBatch,
    tokenizer: Any,
    response_ids: Sequence[Sequence[int]],
    separator: str = DEFAULT_SEPARATOR,
    *,
    regex: bool = False,
) -> None:
    """Decode each response's token ids (no padding; EOS may end them) with the policy tokenizer and
    split it into steps located in policy tokens. Writes ``texts`` and ``steps``."""
    if len(response_ids) != len(batch.prompts):
        raise ValueError(f"got {len(response_ids)} responses for {len(batch.prompts)} prompts")
    texts, offsets = decode_with_offsets(tokenizer, response_ids)
    device = batch.group_ids.device if batch.response_mask is None else batch.response_mask.device
    batch.texts = texts
    batch.steps = segment_batch(texts, offsets, separator, regex=regex, device=device)


def grade(batch: RewardBatch, grader: Callable[[int, str], bool | None]) -> None:
    """Grade each response's final answer: ``grader(i, text)``. Writes ``correct``."""
    batch.correct = [grader(i, text) for i, text in enumerate(batch.texts)]


def score_steps(batch: RewardBatch, prm: Any | None) -> None:
    """Score every step with ``prm`` (any :class:`purerl.prm.PRM`; None: no process rewards).

    Writes ``step_scores``, ``step_rewards`` (B, S) and ``scored_mask`` (B, S). A step the PRM returns
    NaN for (cut at its length limit) stays in ``steps`` but not in ``scored_mask``, with reward 0.
    """
    step_mask = batch.steps.step_mask
    if prm is None:
        batch.step_scores = None
        batch.step_rewards = torch.zeros(step_mask.shape, device=step_mask.device)
        batch.scored_mask = torch.zeros_like(step_mask)
        return
    batch.step_scores = prm.score(batch.prompts, batch.steps.steps)
    packed = batch.steps.pack(batch.step_scores)
    unscored = torch.isnan(packed)
    batch.scored_mask = step_mask & ~unscored
    batch.step_rewards = packed.nan_to_num(0.0)


def verifiable_rewards(correct: Sequence[bool | None], has_truth: Sequence[bool], device=None) -> torch.Tensor:
    """(B,) verifiable rewards: 1.0 for a correct final answer, 0.0 otherwise, NaN where the prompt has
    no ground truth (so the response gets no verifiable advantage and stays out of its group's
    baseline).

    >>> verifiable_rewards([True, False, None, True], [True, True, True, False])
    tensor([1., 0., 0., nan])
    """
    if len(correct) != len(has_truth):
        raise ValueError(f"got {len(correct)} grades but {len(has_truth)} ground-truth flags")
    values = [float(c is True) if truth else float("nan") for c, truth in zip(correct, has_truth)]
    return torch.tensor(values, device=device)


def verify(batch: RewardBatch, has_truth: Sequence[bool]) -> None:
    """Verifiable rewards from ``correct`` where ``has_truth``. Writes ``verifiable_rewards``."""
    if batch.correct is None:
        raise ValueError("verifiable rewards need grades: call grade() first")
    batch.verifiable_rewards = verifiable_rewards(batch.correct, has_truth, device=batch.group_ids.device)


@dataclass(frozen=True)
class ProcessGroup:
    """How one process of a distributed run sees the others, for credit whose group baselines span
    processes (a prompt's K responses may sit on different processes).

    ``all_gather(x)`` returns the (n, k) tensors of every process concatenated in rank order (n the same
    on every process, as TRL and verl batches are); ``rank`` is this process's index.
    """

    all_gather: Callable[[torch.Tensor], torch.Tensor]
    rank: int


def assign_credit(batch: RewardBatch, settings: CreditSettings, group: ProcessGroup | None = None) -> None:
    """PURE advantages (:func:`purerl.credit.pure_advantages`) from the batch's rewards.

    Reads ``step_rewards``, ``scored_mask``, ``steps.step_ends``, ``response_mask``, ``group_ids``,
    ``verifiable_rewards`` and, for the KL penalty, ``logprobs`` and ``ref_logprobs``. Writes ``kl``
    (None without a reference), ``advantages`` and ``returns``. With ``group``, ``group_ids`` must be
    the same ids on every process and the baselines are computed over every process's responses
    (:func:`_distributed_credit`); the result equals a one-process call on the whole batch.
    """
    s = settings
    kl = None
    if batch.ref_logprobs is not None:
        kl = kl_penalty(batch.logprobs, batch.ref_logprobs, s.kl_estimator)
    step_mask = batch.scored_mask if s.process_rewards else torch.zeros_like(batch.scored_mask)
    penalty = -s.kl_coef * kl if (kl is not None and s.kl_in_reward) else batch.token_penalty
    batch.kl = kl
    args = (batch.step_rewards, step_mask, batch.steps.step_ends, batch.response_mask.float())
    if group is None:
        batch.advantages, batch.returns = pure_advantages(
            *args, batch.group_ids, batch.verifiable_rewards, mode=s.mode, temperature=s.temperature,
            vr_coef=s.vr_coef, max_len=s.max_len, token_penalty=penalty,
        )  # fmt: skip
    else:
        if s.whiten:
            raise ValueError("whitening across processes is not supported: whiten=False with a ProcessGroup")
        batch.advantages, batch.returns = _distributed_credit(*args, batch, s, penalty, group)
    if s.whiten:
        batch.advantages = masked_whiten(batch.advantages, batch.response_mask)


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


def _distributed_credit(step_rewards, step_mask, step_ends, response_mask, batch, s, penalty, group):
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
    vr = batch.verifiable_rewards
    as64 = values.to(torch.float64)  # exact for float32 values and for group ids below 2**53
    no_vr = torch.full_like(as64, float("nan"))
    mine = torch.stack([as64, no_vr if vr is None else vr.to(torch.float64), batch.group_ids.to(torch.float64)], -1)
    every = group.all_gather(mine)
    rows = slice(group.rank * values.shape[0], (group.rank + 1) * values.shape[0])
    baseline, vr_advantages = group_baselines(
        every[:, 0].to(values.dtype), every[:, 2].long(), None if vr is None else every[:, 1].to(values.dtype)
    )
    vr_part = None if vr_advantages is None else vr_advantages[rows]
    advantages = combine_advantages(returns, _pad_to(response_mask, width_t), baseline[rows], vr_part, s.vr_coef)
    return advantages[:, :local_t], returns[:, :local_t]


def batch_metrics(batch: RewardBatch, settings: CreditSettings) -> dict[str, float]:
    """The paper's monitoring set for the batch (:func:`purerl.monitor.response_metrics`), the count of
    unscored steps, advantage / return statistics, entropy and KL where known."""
    mask = batch.response_mask
    transformed = None
    if batch.step_scores is not None:
        transformed = transform_step_rewards(batch.step_rewards, batch.scored_mask, settings.mode, settings.temperature)
    metrics = response_metrics(
        correct=batch.correct, group_ids=batch.group_ids.tolist(), steps=batch.steps.steps,
        step_scores=batch.step_scores, transformed=transformed, response_mask=mask, truncated=batch.truncated,
    )  # fmt: skip
    if batch.step_scores is not None:
        metrics["prm/unscored_steps"] = float(batch.unscored_steps)
    if batch.advantages is not None:
        metrics.update(tensor_stats("advantages", batch.advantages, mask))
        metrics.update(tensor_stats("returns", batch.returns, mask))
    if batch.entropy is not None:
        metrics["actor/entropy"] = masked_mean(batch.entropy, mask).item()
    if batch.kl is not None:
        metrics["actor/kl"] = masked_mean(batch.kl, mask).item()
    return metrics


def process_rewards(
    prompts: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    tokenizer: Any,
    *,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    truncated: torch.Tensor,
    separator: str = DEFAULT_SEPARATOR,
    prm: Any | None = None,
    grader: Callable[[int, str], bool | None] | None = None,
    has_truth: Sequence[bool] | None = None,
    regex: bool = False,
) -> RewardBatch:
    """What any engine has after sampling -> a :class:`RewardBatch` with steps, grades, PRM step rewards
    and verifiable rewards (:func:`segment`, :func:`grade`, :func:`score_steps`, :func:`verify`).

    Args:
        prompts: B prompts as the PRM reads them (K copies per problem).
        response_ids: B lists of response token ids, without padding.
        tokenizer: the policy's tokenizer.
        group_ids: (B,) prompt group of each response.
        response_mask, truncated: (B, T) and (B,), as :class:`RewardBatch` describes.
        separator, regex: the step separator.
        prm: a PRM adapter, or None for verifiable rewards only.
        grader: ``grader(i, text) -> bool | None`` for every response (None: no grades).
        has_truth: B flags, where a grade becomes a verifiable reward (None: no verifiable rewards).
    """
    batch = RewardBatch(list(prompts), group_ids, response_mask, truncated)
    segment(batch, tokenizer, response_ids, separator, regex=regex)
    if grader is not None:
        grade(batch, grader)
    score_steps(batch, prm)
    if has_truth is not None:
        verify(batch, has_truth)
    return batch
