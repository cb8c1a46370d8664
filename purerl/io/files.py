"""Durable files: fsync, replace a file so that a reader sees the old or the new content, and read the
JSONL files purerl appends to and resumes from.

Every JSONL file a command resumes from (``metrics.jsonl`` / ``samples.jsonl`` of ``purerl train`` and
``train-prm``, ``purerl eval``'s ``responses.jsonl``, ``label-steps``' output and its
``.partial.jsonl``, the runs of ``purerl compare``'s arms) is read by :func:`read_jsonl`, one rule for
all: a cut last line (a crash while it was written) is dropped with a warning; any other bad line is an
error naming the file and the line, so that no valid row after it is silently lost.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: written beside it, fsynced, renamed over it, the folder fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync(path.parent)


def read_jsonl(path: str | Path, check: Callable[[object], str | None] | None = None, repair: bool = False) -> list:
    """The rows of a JSONL file that purerl appends to (none when it does not exist).

    ``check(row)`` returns None for a good row, else what is wrong with it. The last line, when it does
    not end in a newline and is not a good row, was cut by a crash while it was written: it is dropped
    with a warning (and with ``repair`` cut off the file, so that the next append starts a new line).
    Any other bad line (not JSON, not UTF-8, or refused by ``check``) raises ``ValueError`` naming the
    file and the line: the rows after it are never dropped in silence."""
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")  # the last item is what follows the last newline: b"" unless it was cut
    rows = []
    for number, raw in enumerate(lines, 1):
        last = number == len(lines)
        if not raw.strip():
            continue
        row, why = _parse(raw, check)
        if why is None:
            rows.append(row)
            if last and repair:  # a whole row without its newline (written by hand): the next append needs one
                with path.open("ab") as f:
                    f.write(b"\n")
        elif last:
            log.warning("%s: dropped its cut last line %d (a crash while it was written)", path, number)
            if repair:
                _cut(path, len(data) - len(raw))
        else:
            raise ValueError(f"{path}, line {number}: {why}; fix or delete that line, then run again")
    return rows


def _parse(raw: bytes, check: Callable[[object], str | None] | None) -> tuple[object, str | None]:
    """``(row, None)`` for a good line, else ``(None, what is wrong)``."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError:
        return None, "not JSON"
    why = check(row) if check is not None else None
    return (row, None) if why is None else (None, why)


def _cut(path: Path, size: int) -> None:
    """Cut ``path`` to its first ``size`` bytes (a prefix of whole lines), synced."""
    with path.open("r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
