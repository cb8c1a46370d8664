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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the purerl modules it imports anywhere (function-level imports too; not those under
    ``if TYPE_CHECKING``), from the source alone."""
    modules = {_module_name(p): p for p in _sources()}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}  # fmt: skip
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
        found = {owner(t) for t in targets if t.startswith("purerl")}
        graph[name] = {m for m in found if m and m != name and not name.startswith(m + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    assert _cycles(_import_graph()) == []


LAYERS = {
    "purerl.algo": {"purerl.algo", "purerl.registry"},
    "purerl.pipeline": {"purerl.algo", "purerl.pipeline", "purerl.registry", "purerl.config"},
    "purerl.prm": {"purerl.prm", "purerl.registry", "purerl.config", "purerl.models", "purerl.tasks"},
    "purerl.config": {"purerl.config", "purerl.registry", "purerl.io", "purerl.tasks", "purerl.models.names",
                      "purerl.training.run_control", "purerl.grading", "purerl.pipeline.monitor"},
}  # fmt: skip
"""What each lower layer may import: the math only itself; the pipeline the math; the PRM adapters
neither the PRM tools nor a trainer, command or engine; the configuration no model code (it answers
without torch: of the pipeline only the detectors' settings, from a module that imports nothing)."""


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_below_it(layer):
    allowed = LAYERS[layer]
    for module, targets in _import_graph().items():
        if module == layer or module.startswith(layer + "."):
            wrong = sorted(t for t in targets if not any(t == a or t.startswith(a + ".") for a in allowed))
            assert not wrong, f"{module} imports {wrong}"


def test_the_top_level_holds_packages():
    """The folder listing reads as the architecture: packages, plus the registry and the entry points."""
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "registry.py"]


def _words(name: str) -> tuple[str, ...]:
    import re

    return tuple(sorted(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)))


def test_no_near_twin_names():
    """No two classes made of the same words in another order (PRMTrainConfig / TrainPRMConfig), and no
    two modules of a package whose names differ by a suffix alone (train / trainer)."""
    classes = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                twin = classes.setdefault(_words(node.name), node.name)
                assert twin == node.name or twin.lower() == node.name.lower(), f"{twin} / {node.name}"
    for folder in {p.parent for p in _sources()}:
        stems = sorted(p.stem for p in folder.glob("*.py"))
        for a in stems:
            for b in stems:
                assert a == b or not (b.startswith(a) and b[len(a) :] in ("er", "s", "ing")), (
                    f"{folder.name}/{a}.py and {b}.py"
                )
