"""What keeps a long run safe around the training loop: the run folder, resume settings, signals, guards.

- :func:`claim_run_folder`: ``purerl train`` into a folder that holds a run needs ``--resume`` or
  ``--overwrite``; nothing is wiped by accident.
- :func:`resume_changes`: a resumed run may change only the keys the user names (``--allow-change``)
  besides the run-length and logging keys of :data:`FREE_ON_RESUME`; keys a checkpoint fixes
  (:data:`FIXED_ON_RESUME`) never change.
- :class:`StopSignals`: SIGTERM / SIGINT ask the loop to stop at the end of the current step (a second
  one stops at once); :class:`RunStopped` carries the one-line message and exit code.
- :func:`guard_action`: what the config says to do about the hacking flags a step raised.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GUARD_ACTIONS = ("warn", "stop", "rollback")
"""``run.guards.<flag>``: log a warning; stop the run; or roll back to the last clean checkpoint and go
on with a lower learning rate."""


@dataclass
class GuardConfig:
    """The action of each :class:`purerl.pipeline.monitor.HackingMonitor` flag (``warn``, ``stop``, ``rollback``).

    The defaults are chosen from the recorded runs (docs/hacking.md): the two outcome-anchored detectors
    that flagged every hacked run by the step its held-out greedy accuracy fell 0.1 and no clean run roll
    back (which ended both hacked ``train-prm`` runs above their start, where a stop ended them at it);
    the others, which say how a run is gamed, warn. A stop or roll-back goes to the newest rescue point
    (no acting flag before it, held-out accuracy at least the start's). A NaN or infinite loss always
    stops the run before the optimizer step, the last checkpoint intact.
    """

    heldout_drop: str = "rollback"
    accuracy_drop: str = "rollback"
    proxy_divergence: str = "warn"
    unrewarded_drop: str = "warn"
    prm_disagreement: str = "warn"
    shrinking: str = "warn"
    length_to_cap: str = "warn"
    step_inflation: str = "warn"
    zero_steps: str = "warn"
    one_giant_step: str = "warn"
    repetition: str = "warn"
    rollback_lr_factor: float = 0.5
    """After a roll-back the learning rate is multiplied by this."""
    max_rollbacks: int = 3
    """Roll-backs allowed in one run; the next rollback-flag stops it."""


RUN_FILES = ("metrics.jsonl", "samples.jsonl", "events.jsonl", "rolled_back.jsonl", "summary.json", "plots.png",
             "config.yaml", "checkpoints", "checkpoint", "checkpoint-crash", "final", "final_prm",
             "tensorboard")  # fmt: skip
"""What a run writes into its folder (and ``--overwrite`` removes)."""

FREE_ON_RESUME = ("run.steps", "run.eval_every", "run.checkpoint_every", "run.samples_every", "run.keep_checkpoints",
                  "run.threads", "run.tensorboard", "run.wandb", "run.out_dir", "run.guards")  # fmt: skip
"""Keys a resumed run may change without ``--allow-change``: length, logging, where the folder is."""

FIXED_ON_RESUME = (
    "policy.path",
    "policy.lora_rank",
    "policy.lora_alpha",
    "policy.lora_targets",
    "run.seed",
    "refresh.lora_rank",
)
"""Keys whose value the checkpoint fixes: changing them on resume would have no effect or break loading."""


class RunStopped(Exception):
    """The run stopped on purpose (a signal, a guard, a non-finite loss): a message and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def claim_run_folder(out: Path, resume: bool, overwrite: bool, key: str = "run.out_dir",
                     resume_flag: str = "--resume") -> None:  # fmt: skip
    """Refuse to train into a folder holding another run unless ``resume`` or ``overwrite`` (which
    removes the previous run's files, nothing else); refuse both at once, and an ``out`` (the setting
    ``key``) that is a file or lies under one."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError(f"{resume_flag} and --overwrite contradict each other ({resume_flag} continues the run in "
                         f"{out}, --overwrite deletes it first); give one of them")  # fmt: skip
    check_out_dir(out, key)
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume or not present:
        return
    if not overwrite:
        raise ValueError(
            f"{out} already holds a run ({', '.join(present[:3])}); continue it with --resume, or replace it "
            "with --overwrite (or choose another run.out_dir)"
        )
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    log.info("--overwrite: removed the previous run in %s", out)


def check_out_dir(out: Path, key: str) -> None:
    """Raise ``ValueError`` naming ``key`` when the run folder ``out`` is a file, or a file stands where
    one of the folders above it should be."""
    for folder in [out, *out.parents]:
        if folder.exists():
            if not folder.is_dir():
                what = "a file" if folder == out else f"{folder} is a file"
                raise ValueError(f"{key}={str(out)!r}: {what}, not a folder")
            return


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _matches(key: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in patterns)


def resume_changes(saved: dict, new: dict, allow: list[str]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, new)}`` of the settings that differ, after checking the user allowed each.

    ``allow``: keys or sections (``algo`` allows every ``algo.*``) named with ``--allow-change``.
    """
    old, now = _flatten(saved), _flatten(new)
    changed = {k: (old.get(k), now.get(k)) for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)}
    fixed = [k for k in changed if _matches(k, FIXED_ON_RESUME)]
    if fixed:
        k, (was, now) = fixed[0], changed[fixed[0]]
        raise ValueError(f"--resume: {k} cannot change on resume ({was!r} in the checkpoint, now {now!r})")
    refused = [k for k in changed if not _matches(k, FREE_ON_RESUME) and not _matches(k, allow)]
    if refused:
        shown = ", ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused[:3])
        raise ValueError(
            f"--resume with a changed config ({shown}); allow it with --allow-change {' '.join(refused)}, "
            "or resume with the checkpoint's settings"
        )
    return changed


class StopSignals:
    """SIGTERM and SIGINT during training: the first asks the loop to stop at the end of the step
    (``received`` holds its number), a second stops at once (KeyboardInterrupt). A no-op outside the
    main thread (where Python cannot install handlers)."""

    exit_after_stop = False
    """Set by the command line, whose process ends when a signal stops the run."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._critical = 0
        self.urgent = False

    def check_urgent(self) -> None:
        """Raise the KeyboardInterrupt of a second signal that came where it could not be raised."""
        if self.urgent and not self._critical:
            raise KeyboardInterrupt("second signal")

    @contextmanager
    def critical(self):
        """A section a second signal does not cut (a checkpoint being written); the stop comes after it."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            if self._critical or _in_finalizer(frame):  # raising there would be lost or cut a save short
                self.urgent = True
                return
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signum
        log.warning("%s: stopping after this step and saving a checkpoint (send it again to stop now)",
                    signal.Signals(signum).name)  # fmt: skip

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # a process that exits on the stop ignores a late second signal (it would land in interpreter
            # shutdown as a traceback); in-process callers get their handlers back
            signal.signal(sig, signal.SIG_IGN if self.received is not None and self.exit_after_stop else handler)

    def stopped(self, step: int, saved: Path | None) -> RunStopped:
        name = signal.Signals(self.received).name
        where = f"checkpoint {saved}" if saved else "no checkpoint"
        return RunStopped(f"stopped by {name} after step {step}; {where}; continue with --resume", 128 + self.received)


def _in_finalizer(frame, depth: int = 8) -> bool:
    """Whether ``frame`` runs inside a ``__del__`` (where an exception is printed and dropped)."""
    while frame is not None and depth:
        if frame.f_code.co_name == "__del__":
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def guard_action(flags: list[str], guards) -> tuple[str, list[str]]:
    """The strongest action the config gives any of ``flags`` (stop > rollback > warn) and the flags
    that asked for it; ``("none", [])`` when nothing fired."""
    for action in ("stop", "rollback", "warn"):
        named = [f for f in flags if getattr(guards, f) == action]
        if named:
            return action, named
    return "none", []
