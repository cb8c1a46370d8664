"""Training tasks behind one protocol: problems to sample, a grader, a step separator, a held-out set.

Tasks are registered by name in :data:`purerl.registry.TASKS` (``arithmetic``, ``dataset``); a config
picks one with ``data.task``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from purerl.config import TrainConfig


class Task(Protocol):
    """A source of training problems and a judge of answers.

    A problem is any object with a ``prompt`` (the text the policy continues, before any template);
    the task alone knows what else it holds (its gold answer, its operations).
    """

    separator: str
    """Step separator of the policy's responses (the pipeline splits at it)."""
    heldout: list[Any]
    """Held-out problems for evaluation (empty: no evaluation)."""
    rule_checker: Callable[[str, list[str]], list[bool]] | None
    """Exact step labels ``(prompt, steps) -> [ok, ...]`` where the task can check steps by program (the
    ``rule`` PRM uses it); None otherwise."""

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Raise ``ValueError`` naming the key where ``cfg`` does not fit this task; loads nothing."""
        ...

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Task:
        """The task a validated config asks for."""
        ...

    def sample(self, rng: random.Random, n: int) -> list[Any]:
        """``n`` training problems drawn with ``rng``."""
        ...

    def grade(self, text: str, problem: Any) -> bool | None:
        """Whether a response's final answer is right (None: no answer found / no gold answer)."""
        ...

    def has_reward_answer(self, problem: Any) -> bool:
        """Whether ``problem`` carries ground truth that may give verifiable rewards."""
        ...
