"""The trainer's run state: checkpoints (save, crash save, resume, roll-back) and the guards' actions.

A mixin of :class:`purerl.training.trainer.Trainer`, kept apart so the training loop stays short; it reads the
trainer's policy, optimizer, scheduler, data RNG, monitor, history and logger.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

from purerl.config import to_dict
from purerl.io.logger import read_rows
from purerl.pipeline.monitor import FLAGS
from purerl.training import checkpoint as ckpt
from purerl.training.integrity import RESTORE_ERRORS, first_line, read_saved_config
from purerl.training.run_control import RunStopped, guard_action, resume_changes

log = logging.getLogger(__name__)

STATE_SCHEMA = {"step": int, "optimizer": dict, "scheduler": dict, "data_rng": tuple, "monitor": dict,
                "history": list, "rollbacks": int, "rng": dict}  # fmt: skip
"""The keys of ``purerl train``'s ``trainer_state.pt`` and their types (:meth:`RunState._state`)."""
OPTIONAL_STATE = {"refresh": dict}
"""Keys a ``trainer_state.pt`` holds only for some runs: the refreshed PRM's state (``refresh.enabled``)."""


class RunState:
    """Checkpointing and guard actions of a :class:`purerl.training.trainer.Trainer`."""

    def acting_flags(self) -> set[str]:
        """The flags whose guard stops or rolls back: a checkpoint before which none fired is clean."""
        return {flag for flag in FLAGS if getattr(self.cfg.run.guards, flag) != "warn"}

    def _guard(self, flags: list[str]) -> bool:
        """Act on the step's hacking flags as ``run.guards`` says; True after a roll-back."""
        self.flags_since_save |= set(flags)
        action, named = guard_action(flags, self.cfg.run.guards)
        if action == "none":
            return False
        self.logger.event({"step": self.step, "event": f"guard_{action}", "flags": named})
        if action == "warn":
            log.warning("step %d: hacking flag(s) %s (run.guards: warn)", self.step, ", ".join(named))
            return False
        try:
            clean = ckpt.newest(self.out, acting=self.acting_flags(), accept=self.rescue_point).folder
        except ValueError:
            clean = None
        if action == "stop" or self.rollbacks >= self.cfg.run.guards.max_rollbacks or clean is None:
            why = (
                "run.guards: stop"
                if action == "stop"
                else (
                    f"{self.rollbacks} roll-backs already"
                    if clean is not None
                    else "no clean checkpoint to roll back to"
                )
            )
            raise RunStopped(f"hacking flag(s) {', '.join(named)} at step {self.step} ({why}); "
                             f"last clean checkpoint: {clean or 'none'}", 3)  # fmt: skip
        self._rollback(clean, named)
        return True

    def rescue_point(self, found: ckpt.Found) -> bool:
        """Whether a clean checkpoint is one a guard may stop at or roll back to: its held-out evaluation
        (the one at its step) is at least the start's, greedy and sampled (any checkpoint when the run
        has no held-out problems). A checkpoint saved without an evaluation at its step is not one."""
        start = self.history[0] if self.history else {}
        keys = [k for k in ("eval/accuracy", "eval/sampled_accuracy") if k in start]
        if not keys:
            return True
        row = next((r for r in self.history if r.get("step") == found.step and keys[0] in r), None)
        return row is not None and all(row[k] >= start[k] for k in keys)

    def _state(self) -> dict:
        """Everything but the weights, as plain data and tensors (loaded with ``weights_only=True``)."""
        state = {
            "step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.getstate(), "monitor": self.monitor.state_dict(),
            "history": list(self.history), "rollbacks": self.rollbacks, "rng": ckpt.rng_states(),
        }  # fmt: skip
        if self.refresher is not None:
            state["refresh"] = self.refresher.state_dict()
        return state

    def save(self, state: dict | None = None) -> Path:
        """Checkpoint ``state`` (default: now) into ``checkpoints/step-N``; prune to ``run.keep_checkpoints``."""
        state = state or self._state()
        with self.signals.critical() if self.signals else nullcontext():
            return self._save(state)

    def _save(self, state: dict) -> Path:
        config_text = (self.out / "config.yaml").read_text(encoding="utf-8")
        folder = ckpt.save_checkpoint(ckpt.step_folder(self.out, state["step"]), self.policy, self.tokenizer, state,
                                      config_text, flags=sorted(self.flags_since_save))  # fmt: skip
        self.flags_since_save = set()
        self.saved_step, self.saved = state["step"], folder
        acting = self.acting_flags()  # with no guard that acts there is nothing to return to but the newest
        for removed in ckpt.prune(
            self.out, self.cfg.run.keep_checkpoints, acting, self.rescue_point if acting else None
        ):
            log.debug("removed old checkpoint %s", removed)
        return folder

    def _save_on_crash(self) -> None:
        """Save the state at the start of the step that failed, if its update had not begun."""
        if self.boundary is None or self.phase == "update" or self.boundary["step"] == self.saved_step:
            log.error("training stopped in step %d; the last checkpoint is %s", self.step, self.saved or "none")
            return
        try:
            folder = self.save(self.boundary)
            log.error("training stopped in step %d; saved the state before it: %s (--resume)", self.step, folder)
        except Exception as err:
            log.error("training stopped in step %d; saving a checkpoint failed too: %s", self.step, err)

    def _find_resume(self, resume_from: str | None, allow: list[str]) -> ckpt.Found:
        """The checkpoint to resume and the config changes it accepts, checked before any model loads."""
        found = ckpt.resume_point(resume_from) if resume_from else ckpt.newest(self.out)
        self.resume_state = ckpt.load_state(found.folder, STATE_SCHEMA, OPTIONAL_STATE)  # checks config.yaml's hash too
        saved = read_saved_config(found.folder)
        self.resume_changes = resume_changes(saved, to_dict(self.cfg), allow)
        for log_file in ("metrics.jsonl", "samples.jsonl"):  # a bad line is named before any model loads
            if (self.out / log_file).exists():
                read_rows(self.out / log_file)
        return found

    def _restore(self, folder: Path, lr: float | None = None, state: dict | None = None) -> None:
        """Load a checkpoint folder (and its ``state``, when loaded already) into the live trainer (weights,
        optimizer, RNGs, data position, logs); what it holds is checked first (one ``ValueError`` naming
        the file)."""
        state = state if state is not None else ckpt.load_state(folder, STATE_SCHEMA, OPTIONAL_STATE)
        ckpt.load_weights(self.policy, folder, adapter=self.lora)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.data_rng.setstate(state["data_rng"])
            ckpt.set_rng_states(state["rng"])
            if self.refresher is not None and "refresh" in state:
                self.refresher.load_state_dict(state["refresh"])
            elif self.refresher is not None:
                log.warning("%s holds no refreshed PRM: the refresh starts from the PRM as loaded", folder)
        except RESTORE_ERRORS as err:
            raise ValueError(f"{folder / ckpt.STATE_FILE}: does not fit this run ({first_line(err)})") from None
        ckpt.set_aside_newer(self.out, state["step"])  # a trajectory continued from here must not mix with them
        if lr is not None or "algo.lr" in getattr(self, "resume_changes", {}):
            self._set_base_lr(lr if lr is not None else self.cfg.algo.lr)
        self.monitor.load_state_dict(state["monitor"], history=state["history"])
        self.history = state["history"]
        self.step = self.saved_step = state["step"]
        self.saved, self.flags_since_save = folder, set()
        self.rollbacks = max(self.rollbacks, state.get("rollbacks", 0))

    def _set_base_lr(self, lr: float) -> None:
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = lr * warmup(self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _log_resume(self, found: ckpt.Found) -> None:
        changed = {k: list(v) for k, v in self.resume_changes.items()}
        self.logger.event({"step": self.step, "event": "resume", "from": str(found.folder), "changed": changed})
        log.info("resumed from %s at step %d%s", found.folder, self.step, f"; changed: {changed}" if changed else "")

    def _rollback(self, folder: Path, flags: list[str]) -> None:
        """Back to the clean checkpoint ``folder`` with the learning rate times ``rollback_lr_factor``."""
        step, lr = self.step, self.scheduler.base_lrs[0] * self.cfg.run.guards.rollback_lr_factor
        self._restore(folder, lr=lr)
        self.rollbacks += 1
        note = {"rolled_back_at": step, "rollback": self.rollbacks}
        self.logger.rewind(self.step, note)
        self.logger.event({"step": step, "event": "rollback", "to": self.step, "flags": flags, "lr": lr})
        log.warning("step %d: %s -> rolled back to step %d (%s), lr now %.3g", step, ", ".join(flags), self.step,
                    folder, lr)  # fmt: skip


def warmup(step: int) -> float:
    """The learning-rate factor of step ``step``: a linear warm-up over 5 steps, then 1."""
    return min(1.0, (step + 1) / 5)
