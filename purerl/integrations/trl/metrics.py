"""PURE's metrics and hacking flags in TRL's logs (``pure/...``), merged over every process, and in
``output_dir/metrics.jsonl`` (``purerl train``'s format, which ``purerl monitor`` replays)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from purerl.pipeline import rewards as pipeline
from purerl.pipeline.monitor import FLAGS
from purerl.pipeline.rewards import RewardBatch

log = logging.getLogger(__name__)

__all__ = ["log_pure", "merge_metrics", "pass_at_k", "write_row"]


def write_row(out_dir: str, step: int, metrics: dict[str, float], flags: list[str]) -> None:
    """Append one purerl step's row to ``out_dir/metrics.jsonl`` in ``purerl train``'s format (``purerl
    monitor`` replays it); a new run (step 1) starts the file afresh."""
    path = Path(out_dir) / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "step": step,
        **{k: (None if v != v else v) for k, v in metrics.items()},
        **{f"hack/{f}": 1.0 for f in flags},
    }
    with path.open("w" if step == 1 else "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def merge_metrics(keys: list[str], every: torch.Tensor) -> dict[str, float]:
    """One value per metric from each process's row of ``every`` (P, len(keys)): extremes stay
    extremes, the rest is the mean over the processes (NaN: the metric had no value there)."""
    merged = {}
    for key, column in zip(keys, every.unbind(-1)):
        finite = column[~column.isnan()]
        if key.endswith(("/max", "steps_max")):
            merged[key] = finite.max().item() if finite.numel() else float("nan")
        elif key.endswith("/min"):
            merged[key] = finite.min().item() if finite.numel() else float("nan")
        else:
            merged[key] = column.nanmean().item()
    return merged


def pass_at_k(batch: RewardBatch, gather: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Share of prompts with a right completion, over whole groups, which may span processes: ``gather``
    concatenates every process's (n, 2) rows of (group id, right) in rank order."""
    right = torch.tensor([float(c is True) for c in batch.correct], dtype=torch.float64)
    mine = torch.stack([batch.group_ids.double().cpu(), right], -1).to(batch.response_mask.device)
    groups: dict[int, bool] = {}
    for group, ok in gather(mine).cpu().tolist():
        groups[int(group)] = groups.get(int(group), False) or ok > 0
    return sum(groups.values()) / max(1, len(groups))


def log_pure(trainer, batch: RewardBatch, seconds: float) -> None:
    """PURE's metrics over every process's completions and the hacking flags (warned about, as ``purerl
    train``'s default guards do) into TRL's logs, and PURE's advantage at each completion's first token
    into TRL's completions table."""
    gather = trainer.accelerator.gather
    metrics = pipeline.batch_metrics(batch, trainer.pure_settings)
    metrics["time/pure"] = seconds  # the whole pipeline: segmentation, PRM, credit
    metrics["time/prm"] = trainer._pure_prm_seconds
    keys = sorted(metrics)
    local = torch.tensor([float("nan") if metrics[k] is None else metrics[k] for k in keys],
                         dtype=torch.float64, device=batch.response_mask.device)  # fmt: skip
    merged = merge_metrics(keys, gather(local[None]).view(-1, len(keys)))
    merged["reward/pass_at_k"] = pass_at_k(batch, gather)
    raised = trainer.pure_monitor.update(merged)
    flags = set(raised)
    for key, value in merged.items():
        trainer._metrics["train"][f"pure/{key}"].append(value)
    for flag in FLAGS:
        trainer._metrics["train"][f"pure/hack/{flag}"].append(float(flag in flags))
    trainer.pure_step += 1
    trainer.pure_flags = raised
    if trainer.accelerator.is_main_process:
        write_row(trainer.purerl.run.out_dir, trainer.pure_step, merged, raised)
        if flags:
            log.warning("PURE hacking flag(s) at step %d: %s", trainer.pure_step, ", ".join(raised))
    first = gather(batch.advantages[:, 0].contiguous()).tolist()
    for _ in first:  # TRL's GRPO advantages out, PURE's in
        trainer._logs["advantages"].pop()
    trainer._logs["advantages"].extend(first)
