"""Collection rules for ``--doctest-modules``: a module that needs an engine this environment lacks (an
integration in ``purerl/``, a test worker in ``tests/``) is not imported; its tests skip with a reason
(verl has an environment of its own, see .ci/run; TRL comes with the ``trl`` extra)."""

from __future__ import annotations

import importlib.util

_MISSING = [name for name in ("verl", "trl") if importlib.util.find_spec(name) is None]
collect_ignore_glob = [f"purerl/integrations/{name}/*.py" for name in _MISSING]
collect_ignore_glob += [f"tests/{name}_worker.py" for name in _MISSING]
