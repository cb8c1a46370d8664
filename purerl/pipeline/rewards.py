"""The process-reward pipeline: what every engine does between sampling and the policy update.

``purerl train`` (:mod:`purerl.training.trainer`) calls these functions for its own loop, and an engine that
samples by itself (TRL, verl) calls the same ones after sampling, so that all of them turn the same
token ids into the same steps, rewards and advantages::

    response token ids --segment-->      texts, steps (StepBatch: step_ends, step_mask in policy tokens)
                       --grade-->        correct (final answers; None where none is found)
                       --score_steps-->  PRM step scores, step_rewards (B, S), scored_mask (B, S)
                       --verify-->       verifiable_rewards (B,): 1 / 0, NaN where no ground truth
    + log-probs        --assign_credit--> kl, advantages, returns (B, T) from purerl.algo.credit
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

from purerl.algo.credit import transform_step_rewards
from purerl.algo.stats import masked_mean
from purerl.pipeline.advantages import CreditInputs, CreditSettings, ProcessGroup, compute_credit
from purerl.pipeline.metrics import response_metrics, tensor_stats
from purerl.pipeline.steps import DEFAULT_SEPARATOR, StepBatch, decode_with_offsets, segment_batch

__all__ = [
    "CreditInputs",
    "CreditSettings",
    "ProcessGroup",
    "RewardBatch",
    "assign_credit",
    "batch_metrics",
    "compute_credit",
    "grade",
    "has_ground_truth",
    "process_rewards",
    "score_steps",
    "segment",
    "verifiable_rewards",
    "verify",
    "vr_prompts",
]


@dataclass
class RewardBatch:
    """One batch of sampled responses, B of them, grouped K per prompt; filled phase by phase.

    Attributes:
        prompts: B prompts as the PRM reads them (the bare problem, no policy template).
        group_ids: (B,) prompt group of each response.
        response_mask: (B, T) 1 on response tokens (EOS included).
        truncated: (B,) bool, True where the response hit the length cap.
        texts: B decoded responses (:func:`segment`).
        steps: their :class:`purerl.pipeline.steps.StepBatch` (:func:`segment`).
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

    def credit_inputs(self) -> CreditInputs:
        """The fields credit reads (:func:`compute_credit`)."""
        return CreditInputs(self.step_rewards, self.scored_mask, self.steps.step_ends, self.response_mask,
                            self.group_ids, self.verifiable_rewards, self.logprobs, self.ref_logprobs,
                            self.token_penalty)  # fmt: skip

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


def vr_prompts(prompts: Sequence[str], reward: str, vr_fraction: float,
               has_answer: Sequence[bool] | None = None) -> list[bool]:  # fmt: skip
    """The one rule for which prompts' grades become verifiable rewards (every engine calls it): none
    with ``reward="prm"``; every prompt that has an answer with ``"vr"``; with ``"prm+vr"`` the share
    ``vr_fraction`` of them that :func:`has_ground_truth` picks by the prompt's text (the same prompts
    on every engine, process and step).

    >>> vr_prompts(["a", "b"], "vr", 0.1, [True, False])
    [True, False]
    >>> vr_prompts(["a", "b"], "prm", 1.0)
    [False, False]
    """
    has_answer = [True] * len(prompts) if has_answer is None else list(has_answer)
    if len(has_answer) != len(prompts):
        raise ValueError(f"got {len(has_answer)} answer flags for {len(prompts)} prompts")
    if reward == "prm":
        return [False] * len(prompts)
    fraction = 1.0 if reward == "vr" else vr_fraction
    return [ok and has_ground_truth(p, fraction) for p, ok in zip(prompts, has_answer)]


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


def assign_credit(batch: RewardBatch, settings: CreditSettings, group: ProcessGroup | None = None) -> None:
    """:func:`compute_credit` on the batch's record. Reads ``step_rewards``, ``scored_mask``,
    ``steps.step_ends``, ``response_mask``, ``group_ids``, ``verifiable_rewards`` and, for the KL penalty,
    ``logprobs`` and ``ref_logprobs`` (or ``token_penalty``). Writes ``kl``, ``advantages`` and ``returns``."""
    batch.kl, batch.advantages, batch.returns = compute_credit(batch.credit_inputs(), settings, group)


def batch_metrics(batch: RewardBatch, settings: CreditSettings) -> dict[str, float]:
    """The paper's monitoring set for the batch (:func:`purerl.pipeline.metrics.response_metrics`), the count of
    unscored steps, advantage / return statistics, entropy and KL where known."""
    mask = batch.response_mask
    transformed = None
    if batch.step_scores is not None:
        transformed = transform_step_rewards(batch.step_rewards, batch.scored_mask, settings.mode, settings.temperature)
    rewarded = None if batch.verifiable_rewards is None else (~batch.verifiable_rewards.isnan()).tolist()
    metrics = response_metrics(
        correct=batch.correct, group_ids=batch.group_ids.tolist(), steps=batch.steps.steps,
        step_scores=batch.step_scores, transformed=transformed, response_mask=mask, truncated=batch.truncated,
        rewarded=rewarded,
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
