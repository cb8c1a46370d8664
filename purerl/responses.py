"""Files of responses to grade or rank: read them (with gold answers and given grades), or sample them.

A responses file is a JSONL (or JSON / parquet) file with a question and gold answer per row and the
responses to it in one field: a string or a list of strings. An optional labels field holds given
grades (a bool, or a list of bools, one per response) to compare with ours or to use as they are.
``purerl grade`` and ``purerl bon`` read these files; ``purerl bon --policy`` samples the responses
from a policy instead (:func:`sample_responses`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from purerl.data import DataConfig, DataError, MathExample, load_examples, read_rows

GOLD_FIELDS = ("answer", "gt", "final_answer", "last_boxed:solution")
"""Field specs of the gold answer the CLI tries by default, first present wins."""


@dataclass
class ResponseRow:
    """One question of a responses file."""

    fields: dict
    """The row as read (every field, written back with the grades by :func:`grade_report`)."""
    example: MathExample
    """Its question and gold answer."""
    responses: list[str]
    labels: list | None = None
    """Given grades, one per response (None: the file has none, or the responses were sampled)."""


def _fields(row: dict) -> str:
    return ", ".join(row)


def read_response_rows(
    file: str,
    responses_field: str = "response",
    gold_specs: Sequence[str] = GOLD_FIELDS,
    labels_field: str | None = None,
    limit: int | None = None,
    *,
    sample: Callable[[list[str]], list[list[str]]] | None = None,
) -> list[ResponseRow]:
    """The rows of a responses file; errors (:class:`~purerl.data.DataError`) name the file, row and field.

    Args:
        file: a JSONL / JSON / parquet file (see :func:`purerl.data.read_rows`).
        responses_field: the field of each row's response(s): a string or a list of strings.
        gold_specs: field specs of the gold answer, first present wins (``last_boxed:FIELD`` allowed).
        labels_field: the field of given grades, a bool or a list of bools (None: no labels).
        limit: keep the first N rows (None or 0: all).
        sample: ``sample(questions)`` -> responses per question, used in place of the file's
            responses (labels are then ignored: they grade other responses).
    """
    rows = read_rows(file)
    # every row is checked for a question and gold answer before any sampling starts
    examples = load_examples(DataConfig(path=file, answer=list(gold_specs)), require_answer=True)
    if limit:
        rows, examples = rows[:limit], examples[:limit]
    if sample is not None:
        sampled = sample([e.question for e in examples])
        return [ResponseRow(row, e, list(r)) for row, e, r in zip(rows, examples, sampled)]
    out = []
    for n, (row, example) in enumerate(zip(rows, examples)):
        responses = row.get(responses_field)
        if responses is None:
            raise DataError(f"{file} row {n}: no field {responses_field!r} (fields: {_fields(row)})")
        responses = [responses] if isinstance(responses, str) else list(responses)
        labels = _labels(row, labels_field, len(responses), f"{file} row {n}") if labels_field else None
        out.append(ResponseRow(row, example, responses, labels))
    return out


def _labels(row: dict, field: str, count: int, where: str) -> list:
    """The given grades of a row: one per response."""
    labels = row.get(field)
    if labels is None:
        raise DataError(f"{where}: no field {field!r} (fields: {_fields(row)})")
    labels = [labels] if isinstance(labels, bool) else labels
    if len(labels) != count:
        raise DataError(f"{where}: {len(labels)} labels for {count} responses")
    return labels


def sample_responses(policy: str, questions: Sequence[str], template: str = "chat", samples: int = 8,
                     max_new_tokens: int = 1024, temperature: float = 1.0,
                     seed: int = 0) -> list[list[str]]:  # fmt: skip
    """``samples`` responses to each question from ``policy`` (a folder, hub id, ``.gguf`` or known name).

    One seed for the whole run, set once after the model loads: the same call samples the same text.
    """
    import torch

    from purerl.models import load_policy
    from purerl.prompts import format_prompt
    from purerl.rollout import sample_answers
    from purerl.rollout.hf import HFGenerate

    model, tokenizer = load_policy(policy)
    torch.manual_seed(seed)
    backend = HFGenerate(model.eval(), tokenizer)
    out = []
    for question in questions:
        prompt = format_prompt(question, template, tokenizer)
        answers = sample_answers(backend, [prompt] * samples, max_new_tokens=max_new_tokens, temperature=temperature)
        out.append(answers.texts)
    return out


def grade_report(rows: Sequence[ResponseRow], file: str, extract: Sequence[str] = ("boxed", "answer_is"),
                 timeout: float = 5.0, labels_field: str | None = None, out: str | None = None) -> str:  # fmt: skip
    """Grade every response against its row's gold answer: the totals, the agreement with the given
    labels and each disagreement, as ``purerl grade`` prints them.

    Args:
        rows: from :func:`read_response_rows`.
        file: the file they came from (the report's first line).
        extract: answer extractors, in order (see :func:`purerl.grading.extract_answer`).
        timeout: seconds one comparison may take.
        labels_field: the labels' field, named in the agreement line.
        out: write the rows here as JSONL, each with a ``purerl_grade`` list added.
    """
    from purerl.grading import GradingConfig, extract_answer, grade

    cfg = GradingConfig(extract=tuple(extract), timeout=timeout)
    total = correct = missing = agree = labelled = 0
    disagreements, graded_rows = [], []
    for r in rows:
        grades = [grade(text, r.example.gold, cfg) for text in r.responses]
        total += len(grades)
        correct += sum(g is True for g in grades)
        missing += sum(g is None for g in grades)
        for i, (g, label) in enumerate(zip(grades, r.labels or [])):
            labelled += 1
            agree += bool(g) == bool(label)
            if bool(g) != bool(label):
                answer = extract_answer(r.responses[i], cfg.extract)
                disagreements.append(f"  row {r.example.row} response {i}: gold {r.example.gold}, answer {answer!r}, "
                                     f"ours {g}, label {label}")  # fmt: skip
        graded_rows.append({**r.fields, "purerl_grade": grades})
    if not total:  # no percentages of nothing
        raise DataError(f"{file}: no responses to grade")
    if out:
        with open(out, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in graded_rows)
    lines = [
        f"file        {file}",
        f"responses   {total}",
        f"correct     {correct} ({100 * correct / total:.1f}%)",
        f"no answer   {missing} ({100 * missing / total:.1f}%)",
    ]
    if labelled:
        lines.append(f"agreement   {agree} / {labelled} ({100 * agree / labelled:.2f}%) with field {labels_field!r}")
        lines += disagreements
    return "\n".join(lines)
