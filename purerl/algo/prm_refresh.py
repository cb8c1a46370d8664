"""The online PRM refresh's objective: outcome grades as labels for a PRM's steps (pure tensor math).

A PRM scores step j of an answer with a log-odds ``z_j`` that the step is correct (every format purerl
loads has one: the head's two logits, or the ``+`` / ``-`` next-token logits). The outcome grade says
less than a step label, and the objective says only what it says (multiple-instance learning, as in
min-form credit, where an answer is worth its worst step):

- a **wrong answer has at least one wrong step**: the step the PRM rates lowest is pushed towards wrong,
  ``softplus(min_j z_j)`` (binary cross-entropy with target 0 on that step); the others are left alone;
- a **right answer is evidence that its steps are fine**: every step is pushed towards correct,
  ``mean_j softplus(-z_j)`` (target 1), times ``positive_weight``.

The loss is the mean over the wrong answers plus ``positive_weight`` times the mean over the right ones
(each 0 without such answers), so the two kinds weigh the same whatever the batch's accuracy; answers
without a step are left out. Shapes: ``log_odds`` and ``step_mask`` (B, S), ``correct`` (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def refresh_loss(
    log_odds: torch.Tensor,
    step_mask: torch.Tensor,
    correct: torch.Tensor,
    positive_weight: float = 1.0,
    blame_mask: torch.Tensor | None = None,
    anchor_log_odds: torch.Tensor | None = None,
    anchor_weight: float = 0.0,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The multiple-instance objective above.

    Args:
        log_odds: (B, S) each step's log-odds of being correct (padded steps: any value).
        step_mask: (B, S) bool, True for real steps.
        correct: (B,) bool, the outcome grade of each answer (True: right).
        positive_weight: weight of the right answers' term.
        blame_mask: (B, S) bool, the steps of a wrong answer that may hold its mistake (None: all of them);
            the lowest step is taken among those, and a wrong answer with none is left out
            (:func:`blamable_steps`).
        anchor_log_odds: (B, S) the log-odds of the PRM as it was before the refresh (None: no anchor).
        anchor_weight: weight of the anchor term: on the steps the grade says nothing about (a wrong
            answer's steps other than the one blamed), binary cross-entropy to the earlier PRM's
            probabilities, so the refresh moves only what the grades contradict.
        smoothing: label smoothing ``s``: the targets are ``s`` (wrong) and ``1 - s`` (right) instead of 0
            and 1, so a blamed step's log-odds settle at ``log(s / (1 - s))`` instead of falling without end.

    Returns ``(loss, metrics)``: the scalar loss and, detached, ``wrong_min_p`` (the mean probability the
    PRM gives the lowest step of a wrong answer) and ``right_p`` (the mean over the steps of right answers).

    >>> z = torch.tensor([[2.0, -1.0], [1.0, 3.0]])
    >>> loss, m = refresh_loss(z, torch.ones(2, 2, dtype=torch.bool), torch.tensor([False, True]))
    >>> round(loss.item(), 4)  # softplus(-1) + (softplus(-1) + softplus(-3)) / 2
    0.4942
    """
    mask = step_mask.bool()
    blame = mask if blame_mask is None else mask & blame_mask.bool()
    has_steps = mask.any(-1)
    wrong, right = blame.any(-1) & ~correct.bool(), has_steps & correct.bool()
    lowest = log_odds.masked_fill(~blame, float("inf")).min(-1).values  # (B,) the worst blamable step's log-odds
    zero = log_odds.sum() * 0.0  # keeps the graph (and the device) when a term has no answer
    s = smoothing
    wrong_loss = (F.softplus(lowest[wrong]) - s * lowest[wrong]).mean() if wrong.any() else zero
    per_step = (F.softplus(-log_odds) + s * log_odds).masked_fill(~mask, 0.0)
    right_each = per_step.sum(-1) / mask.sum(-1).clamp(min=1)
    right_loss = right_each[right].mean() if right.any() else zero
    anchor = zero
    if anchor_log_odds is not None and anchor_weight > 0:
        blamed = (log_odds.masked_fill(~blame, float("inf")) == lowest[:, None]) & blame
        quiet = mask & wrong[:, None] & ~blamed  # the steps of wrong answers the grade does not blame
        if quiet.any():
            target = torch.sigmoid(anchor_log_odds.detach())
            anchor = F.binary_cross_entropy_with_logits(log_odds[quiet], target[quiet])
    metrics = {
        "anchor": anchor.detach(),
        "wrong_min_p": torch.sigmoid(lowest[wrong]).mean().detach() if wrong.any() else zero.detach(),
        "right_p": torch.sigmoid(log_odds)[right[:, None] & mask].mean().detach() if right.any() else zero.detach(),
    }
    return wrong_loss + positive_weight * right_loss + anchor_weight * anchor, metrics


def blamable_steps(prompts: list[str], steps: list[list[str]], correct: list[bool]) -> list[list[bool]]:
    """For each wrong answer, the steps that may hold its mistake, read off the right answers to the same
    prompt in the same batch as Math-Shepherd reads a prefix from which the right answer was reached: a
    step whose prefix ``steps[:j + 1]`` a right answer also wrote is vouched for; the mistake is among the
    others (from where the answer leaves every right answer's path on). Without a right answer to its
    prompt, every step may hold it. A right answer has none (False everywhere).

    >>> blamable_steps(["q", "q", "q", "r"], [["a", "b"], ["a", "c", "d"], ["a", "b", "e"], ["x", "y"]],
    ...                [True, False, False, False])
    [[False, False], [False, True, True], [False, False, True], [True, True]]
    """
    paths: dict[str, set[tuple[str, ...]]] = {}
    for p, row, ok in zip(prompts, steps, correct):
        if ok:
            paths.setdefault(p, set()).update(tuple(row[: j + 1]) for j in range(len(row)))
    return [[not ok and tuple(row[: j + 1]) not in paths.get(p, set()) for j in range(len(row))]
            for p, row, ok in zip(prompts, steps, correct)]  # fmt: skip
