"""Load math problems from JSON, JSONL, parquet or HF ``datasets``, with a configurable field mapping.

Every row becomes a :class:`MathExample`: the question, the answer that may feed verifiable rewards
(``answer``; None where the row has none, e.g. the string "null"), and an answer for monitoring only
(``ref_answer``; metrics may read it, rewards never do).

A field spec is a field name (``"problem"``), ``"last_boxed:solution"`` (the last ``\\boxed{}`` of that
field), or a list of such specs tried in order (the first present in a row wins). The defaults cover
the usual layouts (MATH, MATH-500, Minerva Math, OlympiadBench, AIME, AMC, the PURE RL prompts) without
naming any file. Lists of answers (OlympiadBench's ``final_answer``) keep every element; numbers
(AMC's ``27.0``) become strings (``"27"``).

Errors (:class:`DataError`, one line) name the file, the row (``row N`` counts from 0, as
:attr:`MathExample.row` does) and the field; a line that is not JSON or not UTF-8 is named by its line
number (from 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purerl.grading import last_boxed

NULLS = (None, "", "null", "None", "none")


class DataError(ValueError):
    """A data file or row does not fit the field mapping."""


@dataclass
class DataConfig:
    """Where problems come from and which fields hold what."""

    path: str = ""
    """A .json / .jsonl / .parquet file, a folder saved by ``datasets`` (``save_to_disk``), or
    ``hf:<name>`` for ``datasets.load_dataset(<name>)``."""
    split: str = "train"
    """Split of a ``datasets`` dataset (ignored for files)."""
    question: list[str] = field(default_factory=lambda: ["question", "problem", "prompt"])
    """Field spec(s) of the question."""
    answer: list[str] = field(default_factory=lambda: ["answer", "final_answer", "gt", "last_boxed:solution"])
    """Field spec(s) of the ground truth that may feed verifiable rewards."""
    ref_answer: list[str] = field(default_factory=lambda: ["ref_answer"])
    """Field spec(s) of an answer used for monitoring only (never for rewards)."""
    limit: int | None = None
    """Keep the first N rows."""


@dataclass
class MathExample:
    """One problem."""

    question: str
    answer: list[str] | None
    """Gold answers (any of them counts); None: no ground truth on this row."""
    ref_answer: list[str] | None = None
    """Monitoring-only gold answers."""
    row: int = 0
    """Index of the row in its source."""
    meta: dict = field(default_factory=dict)
    """The row's other scalar fields (level, subject, id, ...)."""

    @property
    def gold(self) -> list[str] | None:
        """Ground truth for grading in evaluation: ``answer``, else ``ref_answer``."""
        return self.answer or self.ref_answer


def read_rows(path: str | Path, split: str = "train") -> list[dict]:
    """The rows of a JSON array / JSONL / parquet file, a saved ``datasets`` folder or ``hf:<name>``."""
    spec = str(path)
    if spec.startswith("hf:"):
        import datasets

        return list(datasets.load_dataset(spec[3:], split=split))
    p = Path(spec)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{p}: no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
        return list(ds)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p)
    if suffix == ".json":
        try:
            data = json.loads(_utf8(p))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:
            raise DataError(f"{p}: not valid JSON (nested too deeply)") from None
        if isinstance(data, dict):  # {"data": [...]} or a single split
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{p}: expected a JSON array of rows (or an object with one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON array of rows, got {kind(data)}")
        return data
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError, ...) span several lines
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"{p}: not a readable parquet file ({reason})") from None
    raise DataError(f"{p}: unknown format {suffix!r} (use .json, .jsonl, .parquet or a datasets folder)")


def _utf8(path: Path) -> str:
    """The text of ``path``, which must be UTF-8 (a byte-order mark is allowed); errors name the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None


def _read_jsonl(path: Path) -> list:
    """The rows of a JSONL file; errors name the line (from 1)."""
    rows = []
    for n, line in enumerate(_utf8(path).split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise DataError(f"{path} line {n}: not valid JSON (nested too deeply)") from None
    return rows


def kind(value: Any) -> str:
    """How an error names the JSON type of ``value``: ``a number (7)``, ``an object``, ..."""
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    names = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _value(row: dict, spec: str) -> Any:
    """The value of one field spec in ``row`` (None where absent or null)."""
    if spec.startswith("last_boxed:"):
        text = row.get(spec.split(":", 1)[1])
        return last_boxed(text) if isinstance(text, str) else None
    value = row.get(spec)
    return None if value in NULLS else value


def _as_answers(value: Any) -> list[str] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        s = str(v).strip()
        if len(s) > 1 and s.startswith("$") and s.endswith("$"):
            s = s.strip("$").strip()
        if s not in NULLS:
            out.append(s)
    return out or None


def _pick(row: dict, specs: list[str]) -> tuple[str | None, Any]:
    """The first field spec of ``specs`` present in ``row``, and its value (``(None, None)``: none is)."""
    for spec in specs:
        value = _value(row, spec)
        if value is not None:
            return spec, value
    return None, None


def _answers(row: dict, specs: list[str], where: str) -> list[str] | None:
    """The answers of the first of ``specs`` present in ``row``: a string or number, or a list of them."""
    spec, value = _pick(row, specs)
    items = value if isinstance(value, list) else [value]
    bad = next((v for v in items if isinstance(v, dict | list)), None)
    if bad is not None:
        raise DataError(f"{where}: field {spec!r} holds {kind(bad)}; expected a string, a number or a list of them")
    return _as_answers(value)


def load_examples(cfg: DataConfig, require_answer: bool = False) -> list[MathExample]:
    """The problems of ``cfg.path``; errors name the file, row and field that do not fit.

    ``require_answer``: every row must have a gold answer (``answer`` or ``ref_answer``), as
    evaluation needs.
    """
    if cfg.limit is not None and cfg.limit < 0:
        raise DataError(f"{cfg.path}: limit must be >= 0, got {cfg.limit}")
    rows = read_rows(cfg.path, cfg.split)
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    return examples_from_rows(rows, cfg, require_answer)


def examples_from_rows(rows: list, cfg: DataConfig, require_answer: bool = False) -> list[MathExample]:
    """:func:`load_examples` for rows already read from ``cfg.path`` (which errors name)."""
    if not rows:
        raise DataError(f"{cfg.path}: no rows")
    examples = []
    for n, row in enumerate(rows):
        where = f"{cfg.path} row {n}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with fields, got {kind(row)}")
        spec, question = _pick(row, cfg.question)
        if spec is not None and not isinstance(question, str):
            raise DataError(f"{where}: field {spec!r} holds {kind(question)}; expected the question as a string")
        if not isinstance(question, str) or not question.strip():
            raise DataError(
                f"{where}: no question in field(s) {cfg.question} (fields: {', '.join(row)}); "
                "set data.question to the field that holds it"
            )
        answer, ref = _answers(row, cfg.answer, where), _answers(row, cfg.ref_answer, where)
        if require_answer and answer is None and ref is None:
            raise DataError(
                f"{where}: no answer in field(s) {cfg.answer + cfg.ref_answer} (fields: {', '.join(row)}); "
                "set data.answer to the field that holds it (or last_boxed:<field>)"
            )
        meta = {k: v for k, v in row.items() if isinstance(v, str | int | float | bool) and len(str(v)) < 200}
        examples.append(MathExample(question, answer, ref, n, meta))  # verbatim: templates decide
    return examples


BENCHMARKS = ("math500", "minerva_math", "olympiadbench", "aime24", "amc23")
"""The five benchmarks of the PURE paper's main table, as ``<name>.jsonl`` in a data folder."""


def benchmark_path(name: str, data_dir: str | Path) -> Path:
    """``<data_dir>/<name>.jsonl`` for a benchmark name, or ``name`` itself when it is a file."""
    if Path(name).suffix in (".json", ".jsonl", ".parquet") or Path(name).is_dir():
        return Path(name)
    path = Path(data_dir) / f"{name}.jsonl"
    if not path.exists():
        raise DataError(f"benchmark {name!r}: no file {path} (known: {', '.join(BENCHMARKS)}; set --data-dir)")
    return path
