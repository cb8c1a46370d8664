"""Process reward models behind one protocol: text steps in, one score per step out.

Adapters register under a name (``PRMS``) so that configs choose them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class PRM(Protocol):
    """Scores every step of a batch of responses.

    ``score_range`` documents the scale: (-1, 1) for ``p(1) - p(0)`` heads, (0, 1) for probabilities.
    """

    score_range: tuple[float, float]

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """One list of scores per response, one score per step (an empty list for zero steps)."""
        ...


PRMS: dict[str, Callable[..., PRM]] = {}
"""Registry: adapter name -> constructor."""


def register(name: str):
    def wrap(factory):
        PRMS[name] = factory
        return factory

    return wrap


# Adapters register themselves on import.
from purerl.prm import math_shepherd, qwen, rule, token_classification  # noqa: E402, F401
