"""Best-of-N reranking: pick one of N sampled responses by a PRM (or an outcome score), or by vote.

Aggregations of a response's step scores ``r_1..r_n`` (``AGGREGATIONS``):

- ``min``: ``min_j r_j`` (the min-form value of the response);
- ``soft_min_sum``: ``sum_j softmax(-r/T)_j r_j``, the sum of PURE's Eq. 5 transformed rewards (the
  paper's BoN; ``purerl.credit.transform_step_rewards``);
- ``last``: the last step's score; ``mean``: the average;
- ``product``: the product of step probabilities, where scores in [-1, 1] are read as ``(r + 1) / 2``.

Selection methods: ``<aggregation>`` (highest aggregated score wins), ``majority`` (the most frequent
final answer; ties go to the answer seen first), ``weighted_<aggregation>`` (each answer's votes
weighted by its responses' aggregated scores, mapped to [0, 1] first), and ``score`` (a given outcome
score per response, such as an ORM's ``pred_score``).

Accuracy at N averages over the disjoint groups of N responses of each question (N = 1, 2, 4, ...), so
every response is used once at every N.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from purerl.credit import transform_step_rewards
from purerl.grading import answers_match, extract_answer, grade, normalize
from purerl.responses import ResponseRow
from purerl.steps import split_steps

AGGREGATIONS = ("min", "soft_min_sum", "last", "mean", "product")


def aggregate(scores: Sequence[float], how: str, score_range: tuple[float, float] = (-1.0, 1.0),
              temperature: float = 0.1) -> float:  # fmt: skip
    """One value for a response from its step scores (``-inf`` for a response without steps).

    >>> aggregate([0.9, -0.5, 0.2], "min"), aggregate([0.9, -0.5, 0.2], "last")
    (-0.5, 0.2)
    >>> round(aggregate([0.5, 0.5], "product"), 4)
    0.5625
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    if len(scores) == 0:
        return -math.inf
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "product":
        lo, hi = score_range
        return math.prod((s - lo) / (hi - lo) for s in scores)
    r = torch.tensor([list(scores)], dtype=torch.float64)
    return transform_step_rewards(r, torch.ones_like(r, dtype=torch.bool), "soft_min", temperature).sum().item()


def _to_unit(value: float, how: str, score_range: tuple[float, float]) -> float:
    """An aggregated value mapped to [0, 1] for weighting votes."""
    if value == -math.inf:
        return 0.0
    if how == "product":
        return value
    lo, hi = score_range
    return min(1.0, max(0.0, (value - lo) / (hi - lo)))


@dataclass
class Candidate:
    """One sampled response of a question."""

    answer: str | None
    correct: bool
    step_scores: list[float] | None = None
    outcome_score: float | None = None


@dataclass
class Question:
    """The sampled responses of one question, with their answers grouped by equivalence."""

    candidates: list[Candidate]
    answer_classes: list[int] = field(default_factory=list)
    """For each candidate, the index of its class of equivalent answers (-1 without an answer)."""


def answer_classes(answers: Sequence[str | None], timeout: float = 5.0) -> list[int]:
    """Group equivalent final answers (normalised text, then math-verify): a class index per answer."""
    reps: list[str] = []
    out = []
    for ans in answers:
        if ans is None:
            out.append(-1)
            continue
        for i, rep in enumerate(reps):
            if normalize(ans) == normalize(rep) or answers_match(ans, rep, timeout):
                out.append(i)
                break
        else:
            reps.append(ans)
            out.append(len(reps) - 1)
    return out


def make_question(responses: Sequence[str], correct: Sequence[bool], step_scores=None, outcome_scores=None,
                  extract: Sequence[str] = ("boxed", "answer_is")) -> Question:  # fmt: skip
    """A :class:`Question` from responses, their correctness and optional step / outcome scores."""
    answers = [extract_answer(r, extract) for r in responses]
    cands = [
        Candidate(
            a,
            bool(c),
            None if step_scores is None else list(step_scores[i]),
            None if outcome_scores is None else float(outcome_scores[i]),
        )
        for i, (a, c) in enumerate(zip(answers, correct))
    ]
    return Question(cands, answer_classes(answers))


def select(question: Question, idx: Sequence[int], method: str, score_range=(-1.0, 1.0)) -> int:
    """Index (into ``question.candidates``) of the response ``method`` picks among ``idx``."""
    cands = question.candidates
    if method == "score":
        if any(cands[i].outcome_score is None for i in idx):
            raise ValueError("method 'score' needs an outcome score per response")
        return max(idx, key=lambda i: cands[i].outcome_score)
    if method in AGGREGATIONS:
        return max(idx, key=lambda i: aggregate(_steps(cands[i]), method, score_range))
    if method == "majority" or method.startswith("weighted_"):
        how = method.removeprefix("weighted_")
        votes: dict[int, float] = {}
        first: dict[int, int] = {}
        for i in idx:
            cls = question.answer_classes[i]
            if cls < 0:
                continue
            w = 1.0
            if method != "majority":
                w = _to_unit(aggregate(_steps(cands[i]), how, score_range), how, score_range)
            votes[cls] = votes.get(cls, 0.0) + w
            first.setdefault(cls, i)
        if not votes:
            return idx[0]
        best = max(votes, key=lambda c: (votes[c], -first[c]))
        return first[best]
    raise ValueError(f"unknown selection method {method!r}")


def _steps(c: Candidate) -> list[float]:
    if c.step_scores is None:
        raise ValueError("PRM aggregations need step scores (score the responses with a PRM)")
    return c.step_scores


def group_sizes(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n`` (and ``n`` itself)."""
    sizes, k = [], 1
    while k < n:
        sizes.append(k)
        k *= 2
    return [*sizes, n]


def bon_accuracy(questions: Sequence[Question], methods: Sequence[str], score_range=(-1.0, 1.0)) -> dict:
    """``{method: {N: accuracy}}`` over disjoint groups of N responses per question (see module doc)."""
    n = min(len(q.candidates) for q in questions)
    table: dict[str, dict[int, float]] = {}
    for method in methods:
        table[method] = {}
        for size in group_sizes(n):
            hits = total = 0
            for q in questions:
                for start in range(0, n - size + 1, size):
                    idx = list(range(start, start + size))
                    hits += q.candidates[select(q, idx, method, score_range)].correct
                    total += 1
            table[method][size] = hits / total
    # an oracle row: any of the N is correct (pass@N over the same groups)
    table["oracle"] = {}
    for size in group_sizes(n):
        groups = [(q, range(s, s + size)) for q in questions for s in range(0, n - size + 1, size)]
        table["oracle"][size] = sum(any(q.candidates[i].correct for i in g) for q, g in groups) / len(groups)
    return table


def format_table(table: dict[str, dict[int, float]]) -> str:
    """A :func:`bon_accuracy` table as text: a row per method, a column per N, accuracy in %."""
    sizes = sorted(next(iter(table.values())))
    lines = ["method".ljust(22) + "".join(f"N={s}".rjust(8) for s in sizes)]
    for method, row in table.items():
        lines.append(method.ljust(22) + "".join(f"{100 * row[s]:8.1f}" for s in sizes))
    return "\n".join(lines)


def bon_report(rows: Sequence[ResponseRow], file: str, *, outcome_field: str | None = None, prm: str | None = None,
               prm_kind: str = "token_classification", score_map: str = "none", separator: str = "\n\n",
               out: str | None = None) -> str:  # fmt: skip
    """Best-of-N accuracy of the responses of each row, as ``purerl bon`` prints it.

    Majority vote always; ``outcome_field``: also the pick by that outcome score per response (a
    number or a one-element list); ``prm``: also every PRM aggregation and weighted vote, with step
    scores from that PRM (a folder or hub id, adapter ``prm_kind``; steps split at ``separator``).
    A response is correct by its row's labels if the rows have them, else by grading it.

    Args:
        rows: from :func:`purerl.responses.read_response_rows`.
        file: the file they came from (named in errors).
        out: write ``{"questions": ..., "accuracy": {method: {N: accuracy}}}`` here as JSON.
    """
    methods = ["majority"] + (["score"] if outcome_field else [])
    scorer = None
    if prm:
        from purerl.builders import load_prm

        scorer = load_prm(prm, prm_kind, score_map=score_map)
        methods += list(AGGREGATIONS) + [f"weighted_{a}" for a in AGGREGATIONS]
    questions = [_bon_question(r, file, outcome_field, scorer, separator) for r in rows]
    table = bon_accuracy(questions, methods, scorer.score_range if scorer else (-1.0, 1.0))
    if out:
        with open(out, "w") as f:
            json.dump({"questions": len(questions), "accuracy": table}, f, indent=2)
    return f"{len(questions)} questions; accuracy (%) of the pick among N responses\n" + format_table(table)


def _bon_question(row: ResponseRow, file: str, outcome_field: str | None, scorer, separator: str) -> Question:
    """A :class:`Question` from one row of a responses file, its responses scored by ``scorer`` if any."""
    example, responses = row.example, row.responses
    step_scores = None
    if scorer is not None:
        steps = [[s.text for s in split_steps(r, separator)] for r in responses]
        step_scores = scorer.score([example.question] * len(responses), steps)
    correct = row.labels if row.labels is not None else [bool(grade(r, example.gold)) for r in responses]
    outcome = None
    if outcome_field:
        values = row.fields.get(outcome_field)
        if values is None or len(values) != len(responses):
            raise ValueError(f"{file} row {example.row}: field {outcome_field!r} needs one score per response")
        outcome = [v[0] if isinstance(v, list) else v for v in values]  # [[3.5], ...] or [3.5, ...]
    return make_question(responses, correct, step_scores, outcome)
