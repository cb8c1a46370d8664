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
    blame: str = "min",
    weighting: str = "classes",
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
        anchor_weight: weight of the anchor term: on a wrong answer's steps other than the one blamed,
            cross-entropy to the earlier PRM's probabilities (the refresh moves what the grades contradict).
        smoothing: label smoothing ``s``: the targets are ``s`` (wrong) and ``1 - s`` (right) instead of 0
            and 1, so a blamed step's log-odds settle at ``log(s / (1 - s))`` instead of falling without end.
        blame: which step of a wrong answer is pushed towards wrong (:func:`blamed_step`): ``min``, its
            lowest-scored blamable step; ``last``, its final step (wrong for certain when a step's label
            means "the gold answer can still be reached from here", as Math-Shepherd's labels do).
        weighting: ``classes``, each term the mean over its own answers (wrong and right weigh the same
            whatever the accuracy); ``answers``, both summed and divided by the answers that count (each
            answer weighs the same, so a few wrong answers in an accurate batch weigh little).

    Returns ``(loss, metrics)``: the scalar loss and, detached, ``wrong_min_p`` (the mean probability the
    PRM gives the blamed step of a wrong answer) and ``right_p`` (the mean over the steps of right answers).

    >>> z = torch.tensor([[2.0, -1.0], [1.0, 3.0]])
    >>> loss, m = refresh_loss(z, torch.ones(2, 2, dtype=torch.bool), torch.tensor([False, True]))
    >>> round(loss.item(), 4)  # softplus(-1) + (softplus(-1) + softplus(-3)) / 2
    0.4942
    """
    mask = step_mask.bool()
    pick, chosen = blamed_step(log_odds, mask, blame_mask, blame)
    has_steps = mask.any(-1)
    wrong, right = chosen & ~correct.bool(), has_steps & correct.bool()
    lowest = log_odds.gather(1, pick[:, None]).squeeze(1)  # (B,) the blamed step's log-odds
    zero = log_odds.sum() * 0.0  # keeps the graph (and the device) when a term has no answer
    s = smoothing
    per_step = (F.softplus(-log_odds) + s * log_odds).masked_fill(~mask, 0.0)
    right_each = per_step.sum(-1) / mask.sum(-1).clamp(min=1)
    wrong_loss, right_loss = _weighted(F.softplus(lowest[wrong]) - s * lowest[wrong], right_each[right], weighting)
    anchor = _anchor(log_odds, mask & wrong[:, None], pick, anchor_log_odds) if anchor_weight > 0 else zero
    p_right = torch.sigmoid(log_odds)[right[:, None] & mask].mean().detach() if right.any() else zero.detach()
    p_wrong = torch.sigmoid(lowest[wrong]).mean().detach() if wrong.any() else zero.detach()
    metrics = {"anchor": anchor.detach(), "wrong_min_p": p_wrong, "right_p": p_right}
    return wrong_loss + positive_weight * right_loss + anchor_weight * anchor, metrics


def _anchor(log_odds: torch.Tensor, wrong_steps: torch.Tensor, pick: torch.Tensor, earlier: torch.Tensor | None):
    """The anchor term: cross-entropy to the earlier PRM's probabilities on the steps of wrong answers that
    the grade does not blame (0 without such steps or without ``earlier``)."""
    zero = log_odds.sum() * 0.0
    if earlier is None:
        return zero
    quiet = wrong_steps & ~torch.nn.functional.one_hot(pick, log_odds.shape[1]).bool()
    if not quiet.any():
        return zero
    return F.binary_cross_entropy_with_logits(log_odds[quiet], torch.sigmoid(earlier.detach())[quiet])


def _weighted(wrong: torch.Tensor, right: torch.Tensor, weighting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The wrong and right answers' terms from their per-answer losses (:func:`refresh_loss`'s weighting)."""
    if weighting not in ("classes", "answers"):
        raise ValueError(f"weighting={weighting!r}: choose classes or answers")
    if weighting == "answers":
        n = max(1, wrong.numel() + right.numel())
        return wrong.sum() / n, right.sum() / n
    zero = (wrong.sum() + right.sum()) * 0.0
    return (wrong.mean() if wrong.numel() else zero), (right.mean() if right.numel() else zero)


def blamed_step(
    log_odds: torch.Tensor, mask: torch.Tensor, blame_mask: torch.Tensor | None, blame: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step of each answer :func:`refresh_loss` blames, ``(index (B,), blamable (B,) bool)``: the lowest
    blamable one (``min``) or the last one (``last``); blamable is False where that step may not hold the
    mistake (``blame_mask``) or the row has no step.

    >>> z, m = torch.tensor([[0.5, -1.0, 2.0]]), torch.ones(1, 3, dtype=torch.bool)
    >>> blamed_step(z, m, None, "min")[0].tolist(), blamed_step(z, m, None, "last")[0].tolist()
    ([1], [2])
    """
    if blame not in ("min", "last"):
        raise ValueError(f"blame={blame!r}: choose min or last")
    blamable = mask if blame_mask is None else mask & blame_mask.bool()
    if blame == "min":
        pick = log_odds.masked_fill(~blamable, float("inf")).argmin(-1)
    else:
        pick = (mask.sum(-1) - 1).clamp(min=0)
    return pick, blamable.gather(1, pick[:, None]).squeeze(1)


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


def pairwise_refresh_loss(
    log_odds: torch.Tensor, step_mask: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A ranking alternative to :func:`refresh_loss`: within each prompt's group, every right answer's
    min-form value (its lowest step log-odds) should exceed every wrong answer's, ``softplus(v_wrong -
    v_right)`` averaged over the (right, wrong) pairs of the batch (0 without one). It moves values only
    relative to each other, as RLOO reads them, not the PRM's overall level. Shapes as
    :func:`refresh_loss`, ``group_ids`` (B,).

    >>> z = torch.tensor([[1.0, 2.0], [0.5, 3.0], [-1.0, 0.0]])
    >>> loss, m = pairwise_refresh_loss(z, torch.ones(3, 2, dtype=torch.bool), torch.tensor([True, False, False]),
    ...                                 torch.tensor([0, 0, 1]))
    >>> round(loss.item(), 4)  # one pair in group 0: softplus(0.5 - 1.0)
    0.4741
    """
    mask = step_mask.bool()
    value = log_odds.masked_fill(~mask, float("inf")).min(-1).values
    has = mask.any(-1)
    right, wrong = has & correct.bool(), has & ~correct.bool()
    pairs = (group_ids[:, None] == group_ids[None, :]) & right[:, None] & wrong[None, :]  # (right i, wrong j)
    zero = log_odds.sum() * 0.0
    if not pairs.any():
        return zero, {"pairs": zero.detach(), "pair_accuracy": zero.detach()}
    gaps = (value[None, :] - value[:, None])[pairs]  # v_wrong - v_right
    return F.softplus(gaps).mean(), {"pairs": pairs.sum().float().detach(),
                                     "pair_accuracy": (gaps < 0).float().mean().detach()}  # fmt: skip


def ordered_pairs(values: list[float], correct: list[bool], prompts: list[str]) -> tuple[int, float]:
    """How well min-form values rank answers within each prompt: ``(pairs, ordered)``, the (right, wrong)
    pairs of answers to the same prompt and how many of them the values put right above wrong (a tie
    counts one half). The refresh's gate compares two PRMs by ``ordered`` on answers neither trained on.

    >>> ordered_pairs([0.9, 0.1, 0.5, 0.5, 0.2], [True, False, True, False, False], ["q", "q", "r", "r", "s"])
    (2, 1.5)
    """
    pairs, ordered = 0, 0.0
    groups: dict[str, list[tuple[float, bool]]] = {}
    for v, ok, p in zip(values, correct, prompts):
        groups.setdefault(p, []).append((v, ok))
    for rows in groups.values():
        for v_right, ok in rows:
            if not ok:
                continue
            for v_wrong, bad in rows:
                if bad:
                    continue
                pairs += 1
                ordered += 1.0 if v_right > v_wrong else 0.5 if v_right == v_wrong else 0.0
    return pairs, ordered
