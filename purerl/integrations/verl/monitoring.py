"""The hacking detectors in verl: the same metrics and flags ``purerl train`` logs, from what the ``pure``
reward manager measured for each response (``reward_extra_info``), into verl's tracker (``pure/...``) and
``trainer.default_local_dir/metrics.jsonl`` (``purerl monitor`` replays it).

verl keeps no step texts past the reward loop, so the reward manager records each response's grade,
step count, PRM step scores, length, truncation and repetition score, and
:func:`purerl.pipeline.metrics.summary_metrics` turns them into the monitoring set.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from purerl.integrations.verl.estimator import STEP_ENDS, STEP_REWARDS, VR, group_ids_of
from purerl.io.logger import read_rows
from purerl.pipeline.metrics import summary_metrics
from purerl.pipeline.monitor import HackingMonitor
from purerl.training.run_control import guard_action

LENGTH, TRUNCATED, REPETITION = "pure_length", "pure_truncated", "pure_repetition"
"""The keys of ``reward_extra_info`` the monitoring set reads besides the step layout and ``acc``."""
HELDOUT = re.compile(r"^val-(?:core|aux)/.+/acc/mean@1$")
"""verl's validation metric of one answer per problem, graded by the reward manager (``acc``)."""


def info_metrics(infos: Sequence[dict], uids, with_prm: bool) -> dict[str, float]:
    """The monitoring set of one batch from each response's ``reward_extra_info`` and its group uid."""
    scores = [[math.nan if x is None else float(x) for x in json.loads(i.get(STEP_REWARDS) or "[]")] for i in infos]
    return summary_metrics(
        correct=[None if i.get("acc") is None else float(i["acc"]) >= 0.5 for i in infos],
        group_ids=group_ids_of(uids, len(infos)).tolist(),
        num_steps=[len(json.loads(i.get(STEP_ENDS) or "[]")) for i in infos],
        lengths=[float(i.get(LENGTH, 0)) for i in infos],
        truncated=[bool(i.get(TRUNCATED, False)) for i in infos],
        repetition=[float(i.get(REPETITION, 0.0)) for i in infos],
        step_scores=scores if with_prm else None,
        rewarded=[i.get(VR) is not None for i in infos],
    )  # fmt: skip


def heldout_row(val_metrics: dict, size: int | None) -> dict[str, float]:
    """``eval/accuracy`` (and ``eval/size``) from verl's validation metrics: the mean over data sources of
    ``val-*/<source>/acc/mean@1``; empty when there is none."""
    values = [float(v) for k, v in val_metrics.items() if HELDOUT.match(k)]
    if not values:
        return {}
    row = {"eval/accuracy": sum(values) / len(values)}
    if size:
        row["eval/size"] = float(size)
    return row


class VerlWatch:
    """The detectors of one verl run: fed each step's metrics, logs them and their flags, and says when a
    guard asks the run to stop (``stop_reason``; verl has no roll-back, so ``rollback`` stops too)."""

    def __init__(self, cfg, out_dir: str | None):
        self.cfg = cfg
        self.monitor = HackingMonitor(cfg.run.monitor)
        self.path = Path(out_dir) / "metrics.jsonl" if out_dir else None
        self.stop_reason: str | None = None
        self.started = False

    def observe(self, step: int, row: dict[str, float], metrics: dict) -> list[str]:
        """Run the detectors on ``row`` (step ``step``), add it and its flags to verl's ``metrics`` as
        ``pure/...`` and to ``metrics.jsonl``; set ``stop_reason`` when a guard stops the run."""
        flags = self.monitor.update(row)
        metrics.update({f"pure/{k}": v for k, v in row.items()})
        metrics.update({f"pure/hack/{f}": 1.0 for f in flags})
        if self.path is not None:
            self._write(step, row, flags)
        action, named = guard_action(flags, self.cfg.run.guards)
        if action in ("stop", "rollback") and self.stop_reason is None:
            how = "run.guards: stop" if action == "stop" else "run.guards: rollback, which verl cannot do: stopped"
            self.stop_reason = f"hacking flag(s) {', '.join(named)} at step {step} ({how})"
        return flags

    def _write(self, step: int, row: dict[str, float], flags: list[str]) -> None:
        """Append to ``metrics.jsonl``; the first write of a run drops the rows from this step on (an older
        run's, or those written after the checkpoint verl resumed from)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.started:
            self.started = True
            kept = [r for r in read_rows(self.path) if r["step"] < step] if self.path.exists() else []
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean, **{f"hack/{x}": 1.0 for x in flags}}) + "\n")
