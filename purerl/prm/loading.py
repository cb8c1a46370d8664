"""The one PRM loader: every route that needs a PRM (``purerl train``, the TRL and verl integrations,
``purerl bon``, ``purerl eval-prm``) gets it here, from the config's ``prm`` section
(:class:`purerl.config.PRMConfig`, the one PRM spec)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from purerl.config.loading import ConfigError
from purerl.config.validation import check_prm
from purerl.registry import PRMS

if TYPE_CHECKING:
    from purerl.config import PRMConfig, TrainConfig
    from purerl.prm import PRM

__all__ = ["load_prm", "prm_folder"]


def prm_folder(spec: PRMConfig, builtin: TrainConfig | None = None) -> str | None:
    """Where the model of ``spec`` lives: ``spec.path``, else for a model-backed kind the built-in PRM of
    ``builtin`` (the config whose task and policy it was made for; default: the defaults), trained once
    and cached, or shipped; None for a kind without a model (``rule``)."""
    if spec.path:
        return spec.path
    if not hasattr(PRMS.resolve(spec.kind), "load"):
        return None
    from purerl.config import TrainConfig
    from purerl.models.builtin import prm_path

    return prm_path(builtin or TrainConfig())


def load_prm(spec: PRMConfig, task=None, *, builtin: TrainConfig | None = None, device: str | None = None,
             names: dict[str, str] | None = None) -> PRM:  # fmt: skip
    """The PRM adapter ``spec`` names, for ``task`` (a task class or instance; None: no task).

    Checks the spec first (:func:`purerl.config.validation.check_prm`: a one-line
    :class:`purerl.config.ConfigError` naming the ``prm.*`` key, or the name ``names`` gives it, e.g.
    ``{"prm.kind": "--prm-kind"}`` for a command's flags), then loads; ``device`` overrides
    ``spec.device`` (an engine puts the PRM on its process's device).
    """
    try:
        check_prm(spec, task)
    except ConfigError as err:
        message = str(err)
        for key, name in (names or {}).items():
            message = message.replace(key, name)
        raise ConfigError(message) from None
    if device is not None:
        spec = dataclasses.replace(spec, device=str(device))
    return PRMS.resolve(spec.kind).from_spec(spec, prm_folder(spec, builtin), task)
