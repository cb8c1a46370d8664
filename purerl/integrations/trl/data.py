"""Training data for the TRL integration: the built-in task or a dataset read by ``purerl.io.data``, as the
rows GRPOTrainer samples from (``prompt``, the bare ``problem`` for the PRM, the gold ``answer``), and
the verifiable reward TRL computes from them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from purerl.grading import grade
from purerl.integrations.trl.config import PureScriptArguments
from purerl.io.data import DataConfig, load_examples
from purerl.tasks import arithmetic
from purerl.tasks.prompts import COT_SYSTEM


def _completion_text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


class VerifiableReward:
    """A TRL reward function: 1.0 for a right final answer, 0.0 for a wrong or missing one, None where a
    row has no gold answer (TRL then leaves the row out of that reward). Grading is purerl's: the
    built-in task's exact check, or ``purerl.grading`` (math-verify) on datasets."""

    __name__ = "purerl_accuracy"

    def __init__(self, grader: Callable[[str, str], bool | None], column: str = "answer"):
        self.grader = grader
        self.column = column

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float | None]:
        answers = kwargs.get(self.column)
        if answers is None:
            raise ValueError(f"the training data has no column {self.column!r} (set ground_truth_column)")
        return [
            None if gold in (None, "") else float(self.grader(_completion_text(c), gold) is True)
            for c, gold in zip(completions, answers)
        ]


def _arithmetic_grade(text: str, answer: str) -> bool | None:
    found = arithmetic.extract_answer(text)
    return None if found is None else found == answer


def _dataset_grade(text: str, answer) -> bool | None:
    return grade(text, answer if isinstance(answer, list) else [answer])


def _prompt(question: str, script: PureScriptArguments):
    if script.template == "raw":
        return question
    return [{"role": "system", "content": script.system or COT_SYSTEM}, {"role": "user", "content": question}]


def build_dataset(script: PureScriptArguments):
    """``(datasets.Dataset, grader)`` for the script's task."""
    import datasets

    if script.task == "arithmetic":
        task = arithmetic.ArithmeticTask(arithmetic.ArithmeticConfig(), eval_size=1)
        problems = task.sample(random.Random(f"trl-data-{script.problems_seed}"), script.num_problems)
        rows = [{"prompt": _prompt(p.prompt, script), "problem": p.prompt, "answer": p.answer} for p in problems]
        return datasets.Dataset.from_list(rows), _arithmetic_grade
    cfg = DataConfig(path=script.data_path)
    if script.data_question:
        cfg.question = [script.data_question]
    if script.data_answer:
        cfg.answer = [script.data_answer]
    rows = [
        {"prompt": _prompt(e.question, script), "problem": e.question, "answer": e.answer or None}
        for e in load_examples(cfg)
    ]
    return datasets.Dataset.from_list(rows), _dataset_grade
