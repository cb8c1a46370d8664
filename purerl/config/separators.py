"""Step separators as a command line delivers them: a newline typed as ``\\n`` in a shell reaches purerl as
a backslash and an ``n`` (``prm.separator="\\n"`` in bash), and a real newline in an override is read by
YAML as an empty value. Both would score or split steps at the wrong place without a word, so they are
refused with the spelling that works."""

from __future__ import annotations

import json
import re

_ESCAPES = re.compile(r"(?:\\[ntr]|\s)+")


def check_separator(key: str, value: str, default: str) -> None:
    """Raise ``ValueError`` naming ``key`` for an empty separator, or one made only of backslash escapes
    typed as text (``\\n``, ``\\n\\n``: a quoting slip), with how to write the character.

    >>> check_separator("prm.separator", "\\n", "\\n")
    >>> check_separator("prm.separator", "\\\\n", "\\n")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: prm.separator='\\\\n' is a backslash and a letter, not a newline ...
    """
    example = json.dumps(default)
    hint = f"write {key}='{example}' (YAML's double quotes make \\n a newline), or leave {key} out for its default"
    if value == "":
        raise ValueError(f"{key} is empty (a newline given as a bare override reads as nothing); {hint}")
    if "\\" in value and _ESCAPES.fullmatch(value):
        raise ValueError(f"{key}={value!r} is a backslash and a letter, not a newline (a shell keeps the backslash "
                         f'in "\\n"); {hint}')  # fmt: skip
