"""Step-labelled solutions: TRL's stepwise format and PRM800K's layout, read through :mod:`purerl.io.data`.

The one record is :class:`StepExample`: a prompt, its steps and one bool per step (True: the step is
correct). Two layouts are read (``format``; ``auto`` tells them apart by the first row):

- **stepwise** (TRL's ``trl-lib/math_shepherd`` layout, and what ``purerl label-steps`` writes):
  ``{"prompt": str, "completions": [str, ...], "labels": [bool, ...]}``; field names are configurable
  (``prompt`` / ``completions`` / ``labels`` specs, first present wins). A label may also be a share in
  [0, 1] (soft labels): correct at or above :data:`SOFT_THRESHOLD`.
- **prm800k** (OpenAI's PRM800K phase files): ``{"question": {"problem": ...}, "label": {"steps":
  [{"completions": [{"text", "rating"}, ...], "human_completion", "chosen_completion"}, ...]}}``.
  The trajectory follows, at each step, the completion the labeller chose (``chosen_completion``), else
  the human's completion (correct by construction), else a step's only completion; where none is
  chosen among several (the labeller found them all wanting and the trajectory ends), the first
  completion rated -1 becomes the last step, or the trajectory stops before the step if none is -1.
  Ratings map to labels as: 1 -> correct, -1 -> wrong, 0 (neutral) -> ``neutral``: ``correct``
  (default: a neutral step is not an error), ``wrong``, or ``drop`` (the example is skipped, counted).
  A step without a rating ends the trajectory before it. A trajectory stops at its first wrong step
  (what follows a mistake is not labelled reliably).

Rows that hold no step are skipped and counted; a row that does not fit raises :class:`DataError`
naming the file, the row (from 0) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purerl.io.data import DataError, kind, read_rows

FORMATS = ("auto", "stepwise", "prm800k")
NEUTRAL = ("correct", "wrong", "drop")


@dataclass
class StepDataConfig:
    """Where step-labelled solutions come from and how to read them."""

    path: str = ""
    """A .json / .jsonl / .parquet file, a ``datasets`` folder, or ``hf:<name>``."""
    split: str = "train"
    format: str = "auto"
    """``stepwise``, ``prm800k`` or ``auto`` (by the first row's fields)."""
    prompt: list[str] = field(default_factory=lambda: ["prompt", "question", "problem"])
    """Field spec(s) of the problem (stepwise)."""
    completions: list[str] = field(default_factory=lambda: ["completions", "steps"])
    """Field spec(s) of the list of step strings (stepwise)."""
    labels: list[str] = field(default_factory=lambda: ["labels"])
    """Field spec(s) of the list of step labels (stepwise): bools, or 0/1."""
    neutral: str = "correct"
    """PRM800K's rating 0: ``correct``, ``wrong`` or ``drop`` (skip the example)."""
    limit: int | None = None
    """Keep the first N examples."""


@dataclass
class StepExample:
    """One solution: its prompt, steps and labels (True: correct), and where it came from."""

    prompt: str
    steps: list[str]
    labels: list[bool]
    row: int = 0

    def first_error(self) -> int:
        """Index of the first wrong step (-1: none), ProcessBench's label."""
        return next((k for k, ok in enumerate(self.labels) if not ok), -1)

    def to_row(self) -> dict:
        return {"prompt": self.prompt, "completions": self.steps, "labels": self.labels}


@dataclass
class Loaded:
    """The examples of a file and what was skipped, with why."""

    examples: list[StepExample]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _first(row: dict, specs: list[str]) -> tuple[str | None, Any]:
    for spec in specs:
        if row.get(spec) is not None:
            return spec, row[spec]
    return None, None


SOFT_THRESHOLD = 0.5
"""A soft label (a share in [0, 1], ``purerl label-steps --mode soft``) counts as correct at or above this."""


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and 0 <= value <= 1:
        return value >= SOFT_THRESHOLD
    raise DataError(f"{where}: a label must be true / false or a share in [0, 1], got {kind(value)}")


def stepwise_example(row: dict, cfg: StepDataConfig, where: str) -> StepExample | None:
    """A stepwise row as a :class:`StepExample` (None: no steps)."""
    p_spec, prompt = _first(row, cfg.prompt)
    if not isinstance(prompt, str):
        raise DataError(f"{where}: no prompt (fields {cfg.prompt})" if p_spec is None else
                        f"{where}: field {p_spec!r} holds {kind(prompt)}; expected a string")  # fmt: skip
    c_spec, steps = _first(row, cfg.completions)
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: field {c_spec or cfg.completions[0]!r} must be a list of step strings")
    l_spec, labels = _first(row, cfg.labels)
    if not isinstance(labels, list):
        raise DataError(f"{where}: field {l_spec or cfg.labels[0]!r} must be a list of labels, got {kind(labels)}")
    if len(labels) != len(steps):
        raise DataError(f"{where}: {len(steps)} steps but {len(labels)} labels")
    if not steps:
        return None
    return StepExample(prompt, list(steps), [_label(v, f"{where}, {l_spec}") for v in labels])


def _prm800k_step(step: dict, where: str) -> tuple[str, int | None] | None:
    """The ``(text, rating)`` the trajectory follows at one PRM800K step (None: it ends here)."""
    completions = step.get("completions") or []
    chosen = step.get("chosen_completion")
    if isinstance(chosen, int) and 0 <= chosen < len(completions):
        c = completions[chosen]
        return c.get("text", ""), c.get("rating")
    if isinstance(step.get("human_completion"), dict | str):
        human = step["human_completion"]
        return (human.get("text", "") if isinstance(human, dict) else human), 1
    if len(completions) == 1:
        return completions[0].get("text", ""), completions[0].get("rating")
    wrong = next((c for c in completions if c.get("rating") == -1), None)
    return (wrong.get("text", ""), -1) if wrong is not None else None


def prm800k_example(row: dict, cfg: StepDataConfig, where: str, loaded: Loaded) -> StepExample | None:
    """A PRM800K row as a :class:`StepExample` (None: skipped, counted in ``loaded``)."""
    question, label = row.get("question"), row.get("label")
    if not isinstance(question, dict) or not isinstance(question.get("problem"), str):
        raise DataError(f"{where}: field 'question' must be an object with a 'problem' string")
    if not isinstance(label, dict) or not isinstance(label.get("steps"), list):
        raise DataError(f"{where}: field 'label' must be an object with a 'steps' list")
    steps, labels = [], []
    for k, step in enumerate(label["steps"]):
        if not isinstance(step, dict):
            raise DataError(f"{where}: label.steps[{k}] holds {kind(step)}; expected an object")
        picked = _prm800k_step(step, f"{where}, label.steps[{k}]")
        if picked is None or picked[1] is None:
            break
        text, rating = picked
        if rating == 0 and cfg.neutral == "drop":
            loaded.skip("a neutral step (neutral=drop)")
            return None
        steps.append(text.strip())
        labels.append(rating == 1 or (rating == 0 and cfg.neutral == "correct"))
        if not labels[-1]:
            break
    if not steps:
        loaded.skip("no rated step")
        return None
    return StepExample(question["problem"], steps, labels)


def detect_format(row: Any) -> str:
    if isinstance(row, dict) and isinstance(row.get("label"), dict) and "steps" in row["label"]:
        return "prm800k"
    return "stepwise"


def load_step_examples(cfg: StepDataConfig) -> Loaded:
    """The examples of ``cfg.path`` (rows that do not fit raise :class:`DataError`)."""
    if cfg.format not in FORMATS:
        raise DataError(f"format={cfg.format!r}: choose one of {list(FORMATS)}")
    if cfg.neutral not in NEUTRAL:
        raise DataError(f"neutral={cfg.neutral!r}: choose one of {list(NEUTRAL)}")
    rows = read_rows(cfg.path, cfg.split)
    fmt = cfg.format if cfg.format != "auto" else detect_format(rows[0] if rows else None)
    loaded = Loaded([])
    for i, row in enumerate(rows):
        where = f"{cfg.path}, row {i}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {kind(row)}")
        ex = prm800k_example(row, cfg, where, loaded) if fmt == "prm800k" else stepwise_example(row, cfg, where)
        if ex is None:
            if fmt == "stepwise":
                loaded.skip("no steps")
            continue
        ex.row = i
        loaded.examples.append(ex)
        if cfg.limit is not None and len(loaded.examples) >= cfg.limit:
            break
    return loaded


def write_stepwise(path: str | Path, examples: list[StepExample], mode: str = "w") -> None:
    """Append (``mode="a"``) or write ``examples`` as stepwise JSONL rows, flushed and synced."""
    import os

    with Path(path).open(mode, encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_row()) + "\n")
        f.flush()
        os.fsync(f.fileno())
