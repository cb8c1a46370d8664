"""Files of responses to grade or rank: read them (with gold answers and given grades), or sample them.

A responses file is a JSONL (or JSON / parquet) file with a question and gold answer per row and the
responses to it in one field: a string or a list of strings. An optional labels field holds given
grades (a bool, or a list of bools, one per response) to compare with ours or to use as they are.
``purerl grade`` and ``purerl bon`` read these files; ``purerl bon --policy`` samples the responses
from a policy instead (:func:`sample_responses`).

Bad input is refused before any work with one line (:class:`~purerl.io.data.DataError`) naming the file,
the row (counted from 0, as the grade report and :attr:`purerl.io.data.MathExample.row` count) and the
field: a response that is not a string, an empty list of responses, labels that are not booleans or
not one per response, a gold answer that is an object, an output path that cannot be written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from purerl.io.data import DataConfig, DataError, MathExample, examples_from_rows, kind, read_rows

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


def check_out_path(out: str | None, source: str | None = None) -> None:
    """Refuse an output file that cannot be written (a folder, a missing or read-only folder, the input
    ``source`` itself) before any work is done; None: no output."""
    if not out:
        return
    path = Path(out)
    folder = path.parent
    if path.is_dir():
        raise DataError(f"--out {out}: is a folder, expected a file path")
    if not folder.is_dir():
        raise DataError(f"--out {out}: {'no such folder' if not folder.exists() else 'not a folder'}: {folder}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"--out {out}: not writable")
    if source and path.exists() and Path(source).exists() and path.samefile(source):
        raise DataError(f"--out {out}: is the input file (it would be overwritten)")


def write_text(out: str, text: str) -> None:
    """Write ``text`` to the file ``out``; a failure (disk full, ...) is one line naming it."""
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as e:
        raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from None


def check_extractors(names: Sequence[str]) -> None:
    """Refuse an unknown answer extractor before any grading."""
    from purerl.grading import EVAL_EXTRACTORS

    for name in names:
        if name not in EVAL_EXTRACTORS:
            raise ValueError(f"--extract {name!r}: unknown answer extractor; choose from {', '.join(EVAL_EXTRACTORS)}")


def read_response_rows(
    file: str,
    responses_field: str = "response",
    gold_specs: Sequence[str] = GOLD_FIELDS,
    labels_field: str | None = None,
    limit: int | None = None,
    *,
    sample: Callable[[list[str]], list[list[str]]] | None = None,
) -> list[ResponseRow]:
    """The rows of a responses file; errors (:class:`~purerl.io.data.DataError`) name the file, row and field.

    Args:
        file: a JSONL / JSON / parquet file (see :func:`purerl.io.data.read_rows`).
        responses_field: the field of each row's response(s): a string or a non-empty list of strings.
        gold_specs: field specs of the gold answer, first present wins (``last_boxed:FIELD`` allowed).
        labels_field: the field of given grades, a bool or a list of bools (None: no labels).
        limit: keep the first N rows (None or 0: all).
        sample: ``sample(questions)`` -> responses per question, used in place of the file's
            responses (labels are then ignored: they grade other responses).
    """
    if limit is not None and limit < 0:
        raise DataError(f"--limit must be >= 0, got {limit}")
    rows = read_rows(file)[: limit or None]
    # every row is checked for a question and gold answer before any sampling starts
    examples = examples_from_rows(rows, DataConfig(path=file, answer=list(gold_specs)), require_answer=True)
    if sample is not None:
        sampled = [list(r) for r in sample([e.question for e in examples])]
        for n, responses in enumerate(sampled):
            if not responses:
                raise DataError(f"{file} row {n}: no responses were sampled")
        return [ResponseRow(row, e, r) for row, e, r in zip(rows, examples, sampled)]
    out = []
    for n, (row, example) in enumerate(zip(rows, examples)):
        where = f"{file} row {n}"
        responses = _responses(row, responses_field, where)
        labels = _labels(row, labels_field, len(responses), where) if labels_field else None
        out.append(ResponseRow(row, example, responses, labels))
    return out


def _responses(row: dict, field: str, where: str) -> list[str]:
    """The responses of a row: a string (one response) or a non-empty list of strings."""
    if field not in row:
        raise DataError(f"{where}: no field {field!r} (fields: {_fields(row)})")
    responses = row[field]
    if isinstance(responses, str):
        return [responses]
    if not isinstance(responses, list):
        raise DataError(f"{where}: field {field!r} holds {kind(responses)}; expected a string or a list of strings")
    if not responses:
        raise DataError(f"{where}: field {field!r} is an empty list (no responses)")
    for k, text in enumerate(responses):
        if not isinstance(text, str):
            raise DataError(f"{where}: field {field!r} item {k} holds {kind(text)}; expected a string")
    return responses


def _labels(row: dict, field: str, count: int, where: str) -> list:
    """The given grades of a row: one bool per response."""
    if field not in row:
        raise DataError(f"{where}: no field {field!r} (fields: {_fields(row)})")
    labels = row[field]
    labels = [labels] if isinstance(labels, bool) else labels
    if not isinstance(labels, list):
        raise DataError(f"{where}: field {field!r} holds {kind(labels)}; expected true / false or a list of them")
    if len(labels) != count:
        raise DataError(f"{where}: {len(labels)} labels for {count} responses")
    for k, label in enumerate(labels):
        if not isinstance(label, bool):
            raise DataError(f"{where}: field {field!r} item {k} holds {kind(label)}; expected true or false")
    return labels


def sample_responses(policy: str, questions: Sequence[str], template: str = "chat", samples: int = 8,
                     max_new_tokens: int = 1024, temperature: float = 1.0,
                     seed: int = 0) -> list[list[str]]:  # fmt: skip
    """``samples`` responses to each question from ``policy`` (a folder, hub id, ``.gguf`` or known name).

    One seed for the whole run, set once after the model loads: the same call samples the same text.
    """
    import torch

    from purerl.models.loading import load_policy
    from purerl.rollout import sample_answers
    from purerl.rollout.hf import HFGenerate
    from purerl.tasks.prompts import format_prompt

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

    check_out_path(out, file)
    check_extractors(extract)
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--timeout must be a number of seconds > 0, got {timeout}")
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
        write_text(out, "".join(json.dumps(row) + "\n" for row in graded_rows))
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
