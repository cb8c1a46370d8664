"""Training data for the TRL route: the config's task (the built-in one or ``data.train``'s problems), as
the rows GRPOTrainer samples from, and the verifiable reward TRL computes from them.

The rows are the problems ``purerl train`` draws, in its order (``task.sample`` with the same seeded
generator, ``run.steps x rollout.prompts_per_step`` of them; TRL's shuffling is off), so both engines
train on the same prompts step by step. Each row holds ``prompt`` (in the policy's template), ``problem``
(the bare text the PRM reads), ``problem_index`` (for the grader) and ``has_reward_answer``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from purerl.config import TrainConfig
from purerl.tasks.prompts import COT_SYSTEM, format_prompt

__all__ = ["TaskReward", "build_dataset", "policy_prompt", "rows"]


def _completion_text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


class TaskReward:
    """A TRL reward function: the task's grade of each completion, 1.0 right and 0.0 wrong or no answer,
    None where the problem has no gold answer at all (TRL then leaves the row out of that reward).

    Grading is the task's own (``task.grade``: the built-in task's exact check, or ``purerl.grading`` on a
    dataset). Which grades become verifiable rewards is decided later, by
    :func:`purerl.pipeline.rewards.vr_prompts` in the trainer.
    """

    __name__ = "purerl_accuracy"

    def __init__(self, task: Any):
        self.task = task
        self.problems: list[Any] = []
        self.last_grades: list[bool | None] = []
        """The task's grades of the last call (None: no answer found), for the pipeline's metrics."""

    def add(self, problems: Sequence[Any]) -> list[int]:
        """Make ``problems`` known to the grader; returns their ``problem_index`` values."""
        start = len(self.problems)
        self.problems.extend(problems)
        return list(range(start, len(self.problems)))

    def __call__(self, prompts: Sequence, completions: Sequence, problem_index: Sequence[int] | None = None,
                 **kwargs) -> list[float | None]:  # fmt: skip
        if problem_index is None:
            raise ValueError("the training rows have no problem_index column (build them with purerl's rows())")
        out: list[float | None] = []
        self.last_grades = []
        for completion, index in zip(completions, problem_index):
            problem = self.problems[index]
            grade = self.task.grade(_completion_text(completion), problem)
            self.last_grades.append(grade)
            out.append(None if grade is None and not self.task.has_reward_answer(problem) else float(grade is True))
        return out


def policy_prompt(question: str, cfg: TrainConfig, tokenizer=None):
    """The policy's prompt for a problem, as ``purerl train`` writes it (``rollout.template``); with the
    ``chat`` template, chat messages that TRL renders with the tokenizer's chat template."""
    r = cfg.rollout
    system = r.system or COT_SYSTEM
    if r.template == "chat":
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return format_prompt(question, r.template, tokenizer, system=system)


def rows(problems: Sequence[Any], reward: TaskReward, cfg: TrainConfig, tokenizer=None) -> list[dict]:
    """The TRL rows of ``problems`` (each problem once; TRL repeats it K times)."""
    indices = reward.add(problems)
    return [
        {"prompt": policy_prompt(p.prompt, cfg, tokenizer), "problem": p.prompt, "problem_index": i,
         "has_reward_answer": bool(reward.task.has_reward_answer(p))}
        for p, i in zip(problems, indices)
    ]  # fmt: skip


def build_dataset(task: Any, cfg: TrainConfig, tokenizer=None):
    """``(datasets.Dataset, TaskReward)``: the problems ``purerl train`` would draw for ``cfg``, in order."""
    import datasets

    r = cfg.rollout
    problems = task.sample(random.Random(f"data-{cfg.run.seed}"), cfg.run.steps * r.prompts_per_step)
    reward = TaskReward(task)
    return datasets.Dataset.from_list(rows(problems, reward, cfg, tokenizer)), reward
