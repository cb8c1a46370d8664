"""Process reward models behind one protocol: text steps in, one score per step out.

Adapters are registered by name in :data:`purerl.registry.PRMS` (``token_classification``, ``qwen_prm``,
``math_shepherd``, ``rule``); a config picks one with ``prm.kind``. Every route (``purerl train``, the TRL
and verl integrations, ``bon``, ``eval-prm``) loads one through :func:`purerl.prm.loading.load_prm`, which
checks the spec (the config's ``prm`` section) and resolves the built-in PRM. Importing this package
imports neither torch nor transformers: an adapter loads its model only in ``from_spec`` / ``load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from purerl.registry import PRMS

if TYPE_CHECKING:
    from purerl.config import PRMConfig
    from purerl.tasks import Task

__all__ = ["PRM", "PRMS", "register"]


class PRM(Protocol):
    """Scores every step of a batch of responses.

    ``score_range`` documents the scale: (-1, 1) for ``p(1) - p(0)`` heads, (0, 1) for probabilities.
    """

    score_range: tuple[float, float]

    @classmethod
    def check_config(cls, spec: PRMConfig, task: Task | type[Task] | None) -> None:
        """Raise ``ValueError`` naming the key when ``spec`` (the ``prm`` section) cannot work with
        ``task`` (e.g. a kind that needs ``prm.path`` without one); loads nothing."""
        ...

    @classmethod
    def from_spec(cls, spec: PRMConfig, path: str | None, task: Task | type[Task] | None) -> PRM:
        """The adapter a checked spec asks for, with its model loaded from ``path`` (the spec's path, or
        the built-in PRM's folder that :func:`purerl.prm.loading.load_prm` resolved)."""
        ...

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """One list of scores per response, one score per step (an empty list for zero steps; NaN for
        a step the PRM could not see, e.g. cut at its length limit)."""
        ...


def register(name: str):
    """Decorator: register a PRM adapter class under ``name`` (``PRMS.register(name)``)."""
    return PRMS.register(name)
