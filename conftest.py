"""Collection rules for the doctests of ``purerl/`` (``--doctest-modules``): an integration whose engine
is not installed in this environment is not imported (verl has an environment of its own, see .ci/run)."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [
    f"purerl/integrations/{name}/*.py" for name in ("verl", "trl") if importlib.util.find_spec(name) is None
]
