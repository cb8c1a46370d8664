"""The shape docs/architecture.md promises: small functions and modules, one home for each piece of
math, and credit functions without a default mode."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "purerl"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
LONGER = {}
"""Modules or functions allowed to be longer, each with the reason docs/architecture.md gives (none)."""


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_over_60_lines_and_no_module_over_400(path):
    source = path.read_text(encoding="utf-8")
    name = str(path.relative_to(PACKAGE))
    assert len(source.splitlines()) <= LONGER.get(name, MAX_MODULE_LINES), f"{name} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            where = f"{name}:{node.lineno} {node.name}"
            assert lines <= LONGER.get(where, MAX_FUNCTION_LINES), f"{where} has {lines} lines"


def test_credit_functions_take_the_mode_they_use():
    """No silent default credit mode: the config's default (min) and the functions' cannot disagree."""
    from purerl.algo.credit import process_returns, pure_advantages, transform_step_rewards

    r, m = torch.tensor([[0.5, -0.2]]), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match="mode"):
        transform_step_rewards(r, m)
    ends, mask = torch.tensor([[0, 1]]), torch.ones(1, 2)
    with pytest.raises(TypeError, match="mode"):
        process_returns(r, m, ends, mask)
    with pytest.raises(TypeError, match="mode"):
        pure_advantages(r, m, ends, mask, torch.tensor([0]))


def test_one_temperature_default():
    import inspect

    from purerl.algo import credit
    from purerl.config import AlgoConfig
    from purerl.pipeline.rewards import CreditSettings
    from purerl.registry import DEFAULT_TEMPERATURE

    defaults = [inspect.signature(f).parameters["temperature"].default
                for f in (credit.transform_step_rewards, credit.process_returns, credit.pure_advantages)]  # fmt: skip
    assert defaults == [DEFAULT_TEMPERATURE] * 3
    assert (
        AlgoConfig().temperature == CreditSettings.from_algo(AlgoConfig(), 80).temperature == DEFAULT_TEMPERATURE == 0.1
    )
