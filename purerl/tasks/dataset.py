"""A training task made of a dataset's math problems (e.g. the PURE paper's ~8k MATH RL prompts).

Verifiable rewards come only from a row's ``answer`` (``purerl.io.data``); a row whose gold answer is
only a monitoring ``ref_answer`` (as 7,644 rows of math8k_pure.json) trains on process rewards alone,
while its ``ref_answer`` still feeds the accuracy metrics. Grading is ``purerl.grading`` (math-verify).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from purerl.grading import grade
from purerl.io.data import DataConfig, MathExample, load_examples


@dataclass(frozen=True)
class DataProblem:
    """One dataset problem as the trainer sees it."""

    prompt: str
    reward_answer: tuple[str, ...] | None
    """Ground truth that may give verifiable rewards (None: process rewards only)."""
    monitor_answer: tuple[str, ...] | None
    """Ground truth for metrics (the reward answer, else a monitoring-only answer)."""


def _problem(e: MathExample) -> DataProblem:
    return DataProblem(e.question, tuple(e.answer) if e.answer else None, tuple(e.gold) if e.gold else None)


class DatasetTask:
    """Training problems from ``train``, held-out problems from ``heldout`` (its first ``eval_size``);
    the :class:`purerl.tasks.Task` of ``data.task=dataset``."""

    rule_checker = None  # real math has no exact step checker: a model PRM scores its steps
    math_grading = True  # grades through math-verify's helper process: a trainer starts it before loading models

    def __init__(self, train: DataConfig, heldout: DataConfig | None, eval_size: int, separator: str = "\n\n"):
        self.separator = separator
        self.problems = [_problem(e) for e in load_examples(train)]
        source = heldout if heldout is not None and heldout.path else None
        held = load_examples(source, require_answer=True)[:eval_size] if source else []
        self.heldout = [_problem(e) for e in held]

    @classmethod
    def check_config(cls, cfg) -> None:
        if not cfg.data.train.path:
            raise ValueError("data.task=dataset needs data.train.path (a .jsonl / .json / .parquet file or folder)")

    @classmethod
    def from_config(cls, cfg) -> DatasetTask:
        return cls(cfg.data.train, cfg.data.heldout, cfg.run.eval_size, cfg.data.separator)

    def sample(self, rng: random.Random, n: int) -> list[DataProblem]:
        return [rng.choice(self.problems) for _ in range(n)]

    def grade(self, text: str, problem: DataProblem) -> bool | None:
        """Against the monitoring gold (rewards check ``has_reward_answer`` first)."""
        return None if problem.monitor_answer is None else grade(text, list(problem.monitor_answer))

    @staticmethod
    def has_reward_answer(problem: DataProblem) -> bool:
        return problem.reward_answer is not None
