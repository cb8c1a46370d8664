"""Per-step metrics of sampled responses: the monitoring set every engine logs and the hacking
detectors (:mod:`purerl.pipeline.monitor`) read.

Beside the shape of the answers (steps, lengths, truncation, repetition) it measures what the outcome
grades say about the PRM, on every prompt with a gold answer whether or not its grade is rewarded
(DESIGN section 8: the PRM rising while graded accuracy falls is the definition of hacking):

- ``reward/accuracy_vr`` / ``reward/accuracy_novr``: graded accuracy on the prompts whose grade is a
  verifiable reward, and on the others (the policy can learn to please the PRM only where no grade
  pays);
- ``prm/value_*``: the PRM's value of a response is its min-form value, the lowest score of its steps;
  their spread over the batch (``prm/value_std``), and their mean over right and wrong answers;
- ``prm/grade_auroc``: how well the PRM's values rank right answers above wrong ones (0.5: not at all);
- ``prm/high_value_wrong``: the share of the answers the PRM values highly (at least the median value
  of the batch's right answers) that are graded wrong.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from purerl.algo.stats import auroc, masked_mean

NAN = float("nan")


def repetition_score(steps: Sequence[str]) -> float:
    """Share of a response's steps that repeat an earlier step of the same response (0 = none)."""
    if not steps:
        return 0.0
    seen, repeats = set(), 0
    for s in steps:
        key = " ".join(s.split())
        repeats += key in seen
        seen.add(key)
    return repeats / len(steps)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else NAN


def response_values(step_scores: Sequence[Sequence[float]]) -> list[float]:
    """Each response's min-form value: the lowest of its step scores, NaN scores (steps the PRM never
    saw) left out; NaN for a response with no scored step.

    >>> response_values([[0.5, -0.2], [0.9, float("nan")], []])
    [-0.2, 0.9, nan]
    """
    out = []
    for row in step_scores:
        kept = [x for x in row if not math.isnan(x)]
        out.append(min(kept) if kept else NAN)
    return out


def grade_agreement(values: Sequence[float], correct: Sequence[bool | None]) -> dict[str, float]:
    """What the outcome grades say about the PRM's values of one batch (responses with a value only).

    >>> m = grade_agreement([0.9, 0.8, 0.7, -0.5], [True, False, True, False])
    >>> m["prm/grade_auroc"], m["prm/high_value_wrong"]
    (0.75, 0.5)
    """
    pairs = [(v, c is True) for v, c in zip(values, correct) if not math.isnan(v)]
    right = [v for v, ok in pairs if ok]
    wrong = [v for v, ok in pairs if not ok]
    high = statistics.median(right) if right else math.inf
    rated_high = [ok for v, ok in pairs if v >= high]
    score = auroc([v for v, _ in pairs], [ok for _, ok in pairs])
    return {
        "prm/value_correct": _mean(right),
        "prm/value_wrong": _mean(wrong),
        "prm/grade_auroc": NAN if score is None else score,
        "prm/high_value_wrong": _mean([float(not ok) for ok in rated_high]),
    }


def response_metrics(
    *,
    correct: Sequence[bool | None],
    group_ids: Sequence[int],
    steps: Sequence[Sequence[str]],
    step_scores: Sequence[Sequence[float]] | None,
    transformed: torch.Tensor | None,
    response_mask: torch.Tensor,
    truncated: torch.Tensor,
    rewarded: Sequence[bool] | None = None,
) -> dict[str, float]:
    """The monitoring set for one batch of responses.

    Args:
        correct: per response, whether its final answer is right (None: no answer found); graded
            against every prompt's answer, including prompts that carry no VR (monitoring only).
        group_ids: (B,) prompt of each response.
        steps: the step texts of each response.
        step_scores: raw PRM scores per step (None for VR-only runs).
        transformed: (B, S) transformed step rewards (None for VR-only runs).
        response_mask: (B, T).
        truncated: (B,) bool.
        rewarded: (B,) whether each response's grade is a verifiable reward (None: none is).
    """
    metrics = summary_metrics(
        correct=correct, group_ids=group_ids, num_steps=[len(s) for s in steps],
        lengths=response_mask.sum(-1).float().tolist(), truncated=[bool(t) for t in truncated.tolist()],
        repetition=[repetition_score(s) for s in steps], step_scores=step_scores, rewarded=rewarded,
    )  # fmt: skip
    if step_scores is not None and transformed is not None:
        metrics["prm/sum_transformed"] = transformed.sum(-1).mean().item()
    return metrics


def summary_metrics(
    *,
    correct: Sequence[bool | None],
    group_ids: Sequence[int],
    num_steps: Sequence[int],
    lengths: Sequence[float],
    truncated: Sequence[bool],
    repetition: Sequence[float],
    step_scores: Sequence[Sequence[float]] | None,
    rewarded: Sequence[bool] | None = None,
) -> dict[str, float]:
    """:func:`response_metrics` from per-response numbers (what an engine that keeps no step texts has,
    as verl's reward loop): grades, group ids, step counts, token lengths, truncation, repetition
    scores, raw step scores (None without a PRM) and which grades are rewarded."""
    ok = [c is True for c in correct]
    groups: dict[int, list[bool]] = {}
    for g, c in zip(group_ids, ok):
        groups.setdefault(int(g), []).append(c)
    paid = list(rewarded) if rewarded is not None else [False] * len(ok)
    metrics = {
        "reward/responses": float(len(ok)),
        "reward/accuracy": _mean([float(c) for c in ok]),
        "reward/accuracy_vr": _mean([float(c) for c, p in zip(ok, paid) if p]),
        "reward/accuracy_novr": _mean([float(c) for c, p in zip(ok, paid) if not p]),
        "reward/pass_at_k": _mean([float(any(v)) for v in groups.values()]),
        "reward/no_answer": _mean([float(c is None) for c in correct]),
        "response/steps": _mean(num_steps),
        "response/steps_max": float(max(num_steps) if num_steps else 0),
        "response/length": _mean(lengths),
        "response/length_correct": _mean([n for n, c in zip(lengths, ok) if c]),
        "response/length_incorrect": _mean([n for n, c in zip(lengths, ok) if not c]),
        "response/truncated": _mean([float(t) for t in truncated]),
        "response/zero_steps": _mean([float(n == 0) for n in num_steps]),
        "response/one_step": _mean([float(n == 1) for n in num_steps]),
        "response/repetition": _mean(repetition),
    }
    if step_scores is not None:
        values = response_values(step_scores)
        scored = [[x for x in row if not math.isnan(x)] for row in step_scores]
        scored = [row for row in scored if row]
        kept = [v for v in values if not math.isnan(v)]
        metrics["prm/min_raw"] = _mean(kept)
        metrics["prm/value_std"] = statistics.pstdev(kept) if kept else NAN
        metrics["prm/sum_raw"] = _mean([sum(row) for row in scored])
        metrics["prm/step_mean"] = _mean([x for row in scored for x in row])
        metrics.update(grade_agreement(values, correct))
    return metrics


def tensor_stats(name: str, values: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean / max / min of ``values`` over ``mask`` as ``name/mean`` etc."""
    kept = values[mask.bool()]
    if kept.numel() == 0:
        return {f"{name}/mean": 0.0, f"{name}/max": 0.0, f"{name}/min": 0.0}
    return {
        f"{name}/mean": masked_mean(values, mask).item(),
        f"{name}/max": kept.max().item(),
        f"{name}/min": kept.min().item(),
    }
