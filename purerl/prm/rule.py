"""The ``rule`` PRM: a Python callable checks each step; +1 for a correct step, -1 for a wrong one."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class RulePRM:
    """Wraps ``check(prompt, steps) -> list[bool]`` as a PRM with scores in {-1, +1}."""

    score_range = (-1.0, 1.0)

    def __init__(self, check: Callable[[str, Sequence[str]], list[bool]]):
        self.check = check

    @classmethod
    def check_config(cls, spec, task) -> None:
        if spec.path:
            raise ValueError(f"prm.kind=rule checks steps by program and takes no prm.path (got {spec.path!r})")
        if getattr(task, "rule_checker", None) is None:
            raise ValueError(
                "prm.kind=rule needs a task with an exact step checker (the built-in arithmetic task); "
                "on a dataset task use a model PRM (prm.kind and prm.path)"
            )

    @classmethod
    def from_spec(cls, spec, path: str | None, task) -> RulePRM:
        return cls(task.rule_checker)

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for prompt, row in zip(prompts, steps):
            labels = self.check(prompt, list(row))
            if len(labels) != len(row):
                raise ValueError(f"step checker returned {len(labels)} labels for {len(row)} steps")
            out.append([1.0 if ok else -1.0 for ok in labels])
        return out
