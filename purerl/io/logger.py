"""Run logs: metrics as JSONL (one row a step), sampled completions, TensorBoard, W&B, a progress bar."""

from __future__ import annotations

import errno
import json
import logging
import math
from pathlib import Path

from tqdm import tqdm

from purerl.io.files import read_jsonl, write_atomic

log = logging.getLogger(__name__)

BAR_KEYS = {"reward/accuracy": "acc", "eval/sampled_accuracy": "eval", "response/steps": "steps",
            "response/length": "len", "actor/kl": "kl"}  # fmt: skip


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a JSONL log, each an object with an integer ``step`` (:func:`purerl.io.files.read_jsonl`: a
    cut last line is dropped with a warning; a bad line elsewhere is an error naming the file and line)."""
    if not Path(path).is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
    return read_jsonl(path, _step_row)


def _step_row(row: object) -> str | None:
    if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
        return None
    return 'not a log row (an object with an integer "step")'


def truncate_rows(path: Path, step: int) -> tuple[list[dict], list[dict]]:
    """Keep the rows of a JSONL log up to ``step`` (step 0: the evaluation at the start), rewriting it
    atomically; returns ``(kept, removed)`` (both empty when the file does not exist)."""
    if not path.exists():
        return [], []
    rows = read_rows(path)
    kept = [r for r in rows if r["step"] <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept, rows[len(kept) :]


def _clean(value):
    return None if isinstance(value, float) and math.isnan(value) else value


class RunLogger:
    """Writes ``metrics.jsonl`` and ``samples.jsonl`` under the run folder (and TB / W&B if asked).

    On resume, rows after ``start_step`` (written after the checkpoint) are dropped, so the log
    continues exactly where the checkpoint stands.
    """

    def __init__(self, out: Path, cfg, start_step: int = 0):
        self.out = Path(out)
        self.metrics_path = self.out / "metrics.jsonl"
        self.samples_path = self.out / "samples.jsonl"
        for path in (self.metrics_path, self.samples_path):
            self._truncate(path, start_step)
        self.bar = None
        self.tb = None
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        self.wandb = None
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ValueError("run.wandb=true needs wandb: pip install 'purerl[wandb]'") from None
            from purerl.config import to_dict

            self.wandb = wandb.init(project="purerl", dir=str(self.out), config=to_dict(cfg))

    @staticmethod
    def _truncate(path: Path, start_step: int) -> list[dict]:
        """Keep the rows up to ``start_step`` (atomically); returns the rows removed."""
        return truncate_rows(path, start_step)[1]

    def rewind(self, step: int, note: dict) -> None:
        """Back to ``step`` (a roll-back): later rows move to ``rolled_back.jsonl`` with ``note``, not lost."""
        moved = []
        for path in (self.metrics_path, self.samples_path):
            moved += [{**r, "file": path.name, **note} for r in self._truncate(path, step)]
        with (self.out / "rolled_back.jsonl").open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in moved)
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def event(self, row: dict) -> None:
        """One line in ``events.jsonl``: resumes, roll-backs, guard actions, stops."""
        with (self.out / "events.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def progress(self, start: int, total: int) -> tqdm:
        self.bar = tqdm(total=total, initial=start, desc="purerl train", dynamic_ncols=True)
        return self.bar

    def _write(self, step: int, metrics: dict) -> dict:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not math.isnan(value):
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        return row

    def log_step(self, step: int, metrics: dict) -> dict:
        row = self._write(step, metrics)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({short: f"{metrics[k]:.3g}" for k, short in BAR_KEYS.items() if k in metrics})
        return row

    def log_eval(self, step: int, metrics: dict) -> dict:
        return self._write(step, metrics)

    def log_samples(self, step: int, batch, count: int = 4) -> None:
        """The first ``count`` responses of a :class:`purerl.pipeline.rewards.RewardBatch`."""
        with self.samples_path.open("a") as f:
            for i in range(min(count, len(batch.texts))):
                n = len(batch.steps.steps[i])
                f.write(json.dumps({
                    "step": step, "prompt": batch.prompts[i], "response": batch.texts[i],
                    "steps": batch.steps.steps[i], "step_rewards": batch.step_rewards[i, :n].tolist(),
                    "correct": batch.correct[i],
                }) + "\n")  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
