"""Best-of-N reranking: pick one of N sampled responses by a PRM (or an outcome score), or by vote.

Aggregations of a response's step scores ``r_1..r_n`` (``AGGREGATIONS``):

- ``min``: ``min_j r_j`` (the min-form value of the response);
- ``soft_min_sum``: ``sum_j softmax(-r/T)_j r_j``, the sum of PURE's Eq. 5 transformed rewards (the
  paper's BoN; ``purerl.algo.credit.transform_step_rewards``);
- ``last``: the last step's score; ``mean``: the average;
- ``product``: the product of step probabilities, where scores in [-1, 1] are read as ``(r + 1) / 2``.

Selection methods: ``<aggregation>`` (highest aggregated score wins), ``majority`` (the most frequent
final answer; ties go to the answer seen first), ``weighted_<aggregation>`` (each answer's votes
weighted by its responses' aggregated scores, mapped to [0, 1] first), and ``score`` (a given outcome
score per response, such as an ORM's ``pred_score``).

Accuracy at N averages over the disjoint groups of N responses of each question (N = 1, 2, 4, ...), so
every response is used once at every N; every question must have the same number of responses.

A NaN or infinite score (a PRM step score, or an outcome score) ranks its response lowest: its
aggregate is ``-inf`` and its vote weight 0. :func:`bon_report` counts such responses and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from purerl.algo.credit import transform_step_rewards
from purerl.grading import answers_match, extract_answer, grade, normalize
from purerl.io.data import DataError, kind
from purerl.io.responses import ResponseRow, check_out_path, write_text
from purerl.pipeline.steps import split_steps
from purerl.registry import DEFAULT_TEMPERATURE

AGGREGATIONS = ("min", "soft_min_sum", "last", "mean", "product")


def aggregate(scores: Sequence[float], how: str, score_range: tuple[float, float] = (-1.0, 1.0),
              temperature: float = DEFAULT_TEMPERATURE) -> float:  # fmt: skip
    """One value for a response from its step scores (``-inf`` for a response without steps, or with a
    NaN or infinite score: it ranks lowest).

    >>> aggregate([0.9, -0.5, 0.2], "min"), aggregate([0.9, -0.5, 0.2], "last")
    (-0.5, 0.2)
    >>> round(aggregate([0.5, 0.5], "product"), 4)
    0.5625
    >>> aggregate([0.9, float("nan")], "mean")
    -inf
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    if len(scores) == 0 or not all(math.isfinite(s) for s in scores):
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
        return max(idx, key=lambda i: _finite_or_lowest(cands[i].outcome_score))
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


def _finite_or_lowest(score: float) -> float:
    """``score``, or ``-inf`` for a NaN or infinite one (it ranks lowest)."""
    return score if math.isfinite(score) else -math.inf


def has_nonfinite_score(c: Candidate) -> bool:
    """Whether a NaN or infinite step or outcome score ranks ``c`` lowest."""
    scores = [*(c.step_scores or []), *([] if c.outcome_score is None else [c.outcome_score])]
    return not all(math.isfinite(s) for s in scores)


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
    sizes = sorted({len(q.candidates) for q in questions})
    if not sizes or sizes[0] == 0:
        raise ValueError("Best-of-N needs at least one question with responses")
    if len(sizes) > 1:
        raise ValueError(f"questions have {', '.join(map(str, sizes))} responses; Best-of-N needs the same N for all")
    n = sizes[0]
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
    A response is correct by its row's labels if the rows have them, else by grading it. Every row
    must have the same number of responses (checked, with ``out``, before any model loads); responses
    with a NaN or infinite score rank lowest and are counted in the report.

    Args:
        rows: from :func:`purerl.io.responses.read_response_rows`.
        file: the file they came from (named in errors).
        out: write ``{"questions": ..., "accuracy": {method: {N: accuracy}}, "nonfinite_scores": ...}``
            here as JSON.
    """
    check_out_path(out, file)
    _check_same_n(rows, file)
    outcomes = [_outcome_scores(r, file, outcome_field) for r in rows] if outcome_field else [None] * len(rows)
    methods = ["majority"] + (["score"] if outcome_field else [])
    scorer = None
    if prm:
        from purerl.config import PRMConfig
        from purerl.prm.loading import load_prm
        from purerl.prmtools.processbench import FLAG_NAMES

        split_steps("", separator)  # a bad separator answers before the PRM loads
        scorer = load_prm(PRMConfig(kind=prm_kind, path=prm, score_map=score_map), names=FLAG_NAMES)
        methods += list(AGGREGATIONS) + [f"weighted_{a}" for a in AGGREGATIONS]
    questions = [_bon_question(r, o, scorer, separator) for r, o in zip(rows, outcomes)]
    table = bon_accuracy(questions, methods, scorer.score_range if scorer else (-1.0, 1.0))
    nonfinite = sum(has_nonfinite_score(c) for q in questions for c in q.candidates)
    if out:
        write_text(out, json.dumps({"questions": len(questions), "accuracy": table, "nonfinite_scores": nonfinite},
                                   indent=2))  # fmt: skip
    lines = [f"{len(questions)} questions; accuracy (%) of the pick among N responses"]
    if nonfinite:
        total = sum(len(q.candidates) for q in questions)
        lines.append(f"{nonfinite} of {total} responses have a NaN or infinite score: ranked lowest (vote weight 0)")
    return "\n".join([*lines, format_table(table)])


def _check_same_n(rows: Sequence[ResponseRow], file: str) -> None:
    """Refuse rows with different numbers of responses (accuracy at N needs the same N for every question)."""
    if not rows:
        raise DataError(f"{file}: no rows")
    first = len(rows[0].responses)
    for n, row in enumerate(rows):
        if len(row.responses) != first:
            raise DataError(f"{file} row {n}: {len(row.responses)} response(s), but row 0 has {first}; "
                            "Best-of-N needs the same number of responses in every row")  # fmt: skip


def _outcome_scores(row: ResponseRow, file: str, field: str) -> list[float]:
    """The outcome score per response of a row: a number or a one-element list of one (``[[3.5], ...]``)."""
    where = f"{file} row {row.example.row}"
    values = row.fields.get(field)
    if not isinstance(values, list) or len(values) != len(row.responses):
        got = kind(values) if values is not None else "no such field"
        got = f"{len(values)} scores" if isinstance(values, list) else got
        raise DataError(f"{where}: field {field!r} needs one score per response ({len(row.responses)}); got {got}")
    scores = []
    for k, v in enumerate(values):
        v = v[0] if isinstance(v, list) and len(v) == 1 else v
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise DataError(f"{where}: field {field!r} item {k} holds {kind(v)}; expected a number")
        scores.append(float(v))
    return scores


def _bon_question(row: ResponseRow, outcome: list[float] | None, scorer, separator: str) -> Question:
    """A :class:`Question` from one row of a responses file, its responses scored by ``scorer`` if any."""
    example, responses = row.example, row.responses
    step_scores = None
    if scorer is not None:
        steps = [[s.text for s in split_steps(r, separator)] for r in responses]
        step_scores = scorer.score([example.question] * len(responses), steps)
    correct = row.labels if row.labels is not None else [bool(grade(r, example.gold)) for r in responses]
    return make_question(responses, correct, step_scores, outcome)
