"""The ``rule`` PRM: a Python callable checks each step; +1 for a correct step, -1 for a wrong one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from purerl.prm import register


@register("rule")
class RulePRM:
    """Wraps ``check(prompt, steps) -> list[bool]`` as a PRM with scores in {-1, +1}."""

    score_range = (-1.0, 1.0)

    def __init__(self, check: Callable[[str, Sequence[str]], list[bool]]):
        self.check = check

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for prompt, row in zip(prompts, steps):
            labels = self.check(prompt, list(row))
            if len(labels) != len(row):
                raise ValueError(f"step checker returned {len(labels)} labels for {len(row)} steps")
            out.append([1.0 if ok else -1.0 for ok in labels])
        return out
