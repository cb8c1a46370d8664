"""``run.guards`` in TRL: a ``TrainerCallback`` that stops training when a hacking flag's guard says so.

The flags come from the same detectors ``purerl train`` runs (:class:`purerl.pipeline.monitor.HackingMonitor`,
fed in :func:`purerl.integrations.trl.metrics.log_pure` once per generation round). TRL has no roll-back
of its own, so ``rollback`` stops too; the message names the newest of TRL's checkpoints saved before
the flagged round (``checkpoint-N`` in ``output_dir``), the clean state to continue from.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from transformers import TrainerCallback

from purerl.training.run_control import guard_action

log = logging.getLogger(__name__)

EXIT_GUARD = 3
"""The exit status of a run a guard stopped (as ``purerl train``'s)."""


def clean_checkpoint(out_dir: str, before_step: int) -> str | None:
    """The newest ``checkpoint-N`` folder of TRL in ``out_dir`` with N <= ``before_step`` (None: none)."""
    found = []
    for folder in Path(out_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match and folder.is_dir() and int(match.group(1)) <= before_step:
            found.append((int(match.group(1)), folder))
    return str(max(found)[1]) if found else None


class PureGuards(TrainerCallback):
    """Stops a :class:`purerl.integrations.trl.PureGRPOTrainer` at the end of the optimizer step after a
    flag whose ``run.guards`` action is ``stop`` or ``rollback``; ``stopped`` then holds the one-line reason."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.stopped: str | None = None
        self.flag_step: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        action, named = guard_action(t.pure_flags, t.purerl.run.guards)
        if action in ("stop", "rollback") and self.stopped is None:
            before = t.pure_flag_global_step
            clean = clean_checkpoint(args.output_dir, before)
            how = "run.guards: stop" if action == "stop" else "run.guards: rollback, which TRL cannot do: stopped"
            self.stopped = (f"hacking flag(s) {', '.join(named)} at step {t.pure_step} ({how}); "
                            f"last clean checkpoint: {clean or 'none'}")  # fmt: skip
            control.should_training_stop = True
            log.warning(self.stopped)
        return control
