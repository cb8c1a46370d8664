"""How the `purerl` command reports a failure: one line on standard error and a conventional exit status.

No traceback reaches the user unless ``PURERL_DEBUG=1`` asks for it; :func:`purerl.commands.cli.main` calls
:func:`report_failure` for every exception a command raises except ``SystemExit`` (a command that
exits with its own message and code, as ``purerl train`` does on SIGTERM) and ``KeyboardInterrupt``
(``interrupted``, :data:`EXIT_INTERRUPTED`).
"""

from __future__ import annotations

import os
import sys
import traceback

EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
"""Exit statuses besides 0 (done): 1 an internal error (a bug, or a failure purerl did not foresee),
2 the command cannot run as asked (a bad argument, config value, file or folder), 130 Ctrl-C (128 +
SIGINT, the shell's convention)."""
MAX_MESSAGE = 1000
"""Characters of an error message printed (a message quoting a 1 MB input stays one readable line)."""


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def _os_message(err: OSError) -> str:
    """``path: reason`` of an ``OSError`` (``a -> b: reason`` for a rename), else its text."""
    if err.filename is None or not err.strerror:
        return str(err)
    where = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
    return f"{where}: {err.strerror}"


def report_failure(command: str, err: BaseException) -> int:
    """Print one line about ``err`` (with ``PURERL_DEBUG=1`` its traceback first); returns the exit status.

    ``ValueError`` (``ConfigError`` included) and ``OSError`` are the user's to fix: exit 2, the
    message (an ``OSError`` as the path and the reason). Anything else is an internal error: exit 1."""
    if os.environ.get("PURERL_DEBUG", "") not in ("", "0"):
        traceback.print_exception(err)
    if isinstance(err, ValueError | OSError):
        message = _os_message(err) if isinstance(err, OSError) else str(err)
        print(f"purerl {command}: error: {_one_line(message)}", file=sys.stderr)
        return EXIT_USAGE
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    print(f"purerl {command}: internal error: {_one_line(text)} (set PURERL_DEBUG=1 for the traceback)",
          file=sys.stderr)  # fmt: skip
    return EXIT_INTERNAL
