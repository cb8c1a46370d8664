"""Every extension point of purerl, by name: credit modes, KL estimators, PRM formats, tasks, rollout backends.

A :class:`Registry` maps a name to an implementation. Built-in entries are declared here as
``"module:attribute"`` strings and imported on first use, so that listing or checking names (what
config validation does) never imports torch or transformers: a config error comes back in a fraction
of a second. Add your own with ``REGISTRY.register("name", obj)`` (or as a decorator) in a module you
list under ``plugins`` in the config (or import before building a trainer); docs/architecture.md says
what each kind of entry must provide.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class Registry:
    """Names -> implementations, with lazily imported built-ins.

    >>> r = Registry("colour", {"red": "builtins:str"})
    >>> "red" in r, r.names()
    (True, ['red'])
    >>> r.resolve("blue")
    Traceback (most recent call last):
    ...
    ValueError: unknown colour 'blue'; choose one of ['red']
    """

    def __init__(self, kind: str, builtins: dict[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = dict(builtins or {})
        self._lazy = set(self._entries)

    def register(self, name: str, obj: Any = None, *, replace: bool = False) -> Any:
        """Add ``obj`` under ``name`` (``register(name)`` alone is a decorator). A taken name is an
        error unless ``replace``."""
        if obj is None:
            return lambda target: self.register(name, target, replace=replace)
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered already (pass replace=True to override it)")
        self._entries[name] = obj
        self._lazy.discard(name)
        return obj

    def resolve(self, name: str) -> Any:
        """The implementation of ``name`` (imported on first use); a clear error for an unknown name."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self._entries)}")
        if name in self._lazy:
            module, attr = self._entries[name].split(":")
            self._entries[name] = getattr(importlib.import_module(module), attr)
            self._lazy.discard(name)
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, built-ins first, in the order they were added."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(name)
        return self.resolve(name)


DEFAULT_TEMPERATURE = 0.1
"""The soft-min temperature (PURE Eq. 5, T = 0.1 in the paper): the one default that the credit
functions and the config share (kept here, beside the credit modes, so that the config needs no torch)."""

TRANSFORMS = Registry(
    "credit mode",
    {"soft_min": "purerl.algo.credit:soft_min_transform", "min": "purerl.algo.credit:min_transform",
     "sum": "purerl.algo.credit:sum_transform"},
)  # fmt: skip
"""Step-reward transforms (PURE Eq. 3-5): name -> ``fn(step_rewards, step_mask, temperature) -> (B, S)``."""

KL_ESTIMATORS = Registry(
    "KL estimator",
    {"k1": "purerl.algo.kl:kl_k1", "kl": "purerl.algo.kl:kl_k1", "abs": "purerl.algo.kl:kl_abs",
     "k2": "purerl.algo.kl:kl_k2", "mse": "purerl.algo.kl:kl_k2", "k3": "purerl.algo.kl:kl_k3",
     "low_var_kl": "purerl.algo.kl:kl_k3"},
)  # fmt: skip
"""Per-token KL estimators: name -> ``fn(logprobs, ref_logprobs) -> (B, T)``."""

PRMS = Registry(
    "PRM kind",
    {"token_classification": "purerl.prm.token_classification:TokenClassificationPRM",
     "qwen_prm": "purerl.prm.qwen:QwenPRM", "math_shepherd": "purerl.prm.math_shepherd:MathShepherdPRM",
     "rule": "purerl.prm.rule:RulePRM"},
)  # fmt: skip
"""PRM adapters (:class:`purerl.prm.PRM`): name -> class with ``check_config``, ``from_config`` and ``score``."""

TASKS = Registry(
    "task",
    {"arithmetic": "purerl.tasks.arithmetic:ArithmeticTask", "dataset": "purerl.tasks.dataset:DatasetTask"},
)
"""Training tasks (:class:`purerl.tasks.Task`): name -> class with ``check_config`` and ``from_config``."""

ROLLOUT_BACKENDS = Registry("rollout backend", {"hf": "purerl.rollout.hf:HFGenerate"})
"""Generation backends (:class:`purerl.rollout.RolloutBackend`): name -> ``cls(model, tokenizer)``."""


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import each module named in a config's ``plugins`` (they register entries on import)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"plugins: cannot import {name!r}: {err}") from None
