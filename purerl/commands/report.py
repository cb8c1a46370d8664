"""End-of-run summary: a table in the terminal, ``summary.json`` and the run's plots."""

from __future__ import annotations

import json
from pathlib import Path

from purerl.commands.plots import plot_run, read_metrics, series


def _window_mean(rows: list[dict], key: str, first: bool, n: int = 10) -> float | None:
    _xs, ys = series([r for r in rows if r["step"] > 0], key)
    ys = ys[:n] if first else ys[-n:]
    return sum(ys) / len(ys) if ys else None


def run_summary(rows: list[dict]) -> dict:
    """Start / end numbers of one run's metrics."""
    flags = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("hack/")})
    summary = {"steps": max((r["step"] for r in rows), default=0)}
    for key, name in [
        ("eval/accuracy", "eval_accuracy"),
        ("eval/sampled_accuracy", "eval_sampled_accuracy"),
        ("eval/sampled_steps", "eval_sampled_steps"),
        ("eval/sampled_length", "eval_sampled_length"),
    ]:
        _, acc = series(rows, key)
        summary[f"{name}_start"] = acc[0] if acc else None
        summary[f"{name}_end"] = acc[-1] if acc else None
        summary[f"{name}_best"] = max(acc) if acc else None
    summary.update(
        {
            "hacking_flags": flags,
            "seconds": sum(r.get("time/step", 0.0) + r.get("time/eval", 0.0) for r in rows),
        }
    )
    for key, name in [("response/steps", "steps_per_response"), ("response/length", "length"),
                      ("response/truncated", "truncated"), ("reward/accuracy", "sampled_accuracy"),
                      ("prm/min_raw", "prm_min"), ("prm/sum_raw", "prm_sum")]:  # fmt: skip
        summary[f"{name}_first10"] = _window_mean(rows, key, first=True)
        summary[f"{name}_last10"] = _window_mean(rows, key, first=False)
    return summary


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summarize_run(run_dir: str | Path) -> str:
    """Write ``summary.json`` and ``plots.png`` for a finished run; return a text table."""
    run_dir = Path(run_dir)
    summary = run_summary(read_metrics(run_dir / "metrics.jsonl"))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot = plot_run(run_dir)
    lines = [f"run: {run_dir}  ({summary['steps']} steps, {summary['seconds']:.0f} s of training and evaluation)",
             f"{'':40} {'start':>8} {'end':>8}"]  # fmt: skip
    for name, label in [("eval_accuracy", "held-out greedy accuracy"),
                        ("eval_sampled_accuracy", "held-out sampled accuracy"),
                        ("eval_sampled_steps", "held-out steps per answer")]:  # fmt: skip
        lines.append(f"{label:40} {_fmt(summary[name + '_start']):>8} {_fmt(summary[name + '_end']):>8}")
    for name, label in [("sampled_accuracy", "sampled accuracy"), ("steps_per_response", "steps per response"),
                        ("length", "response length"), ("truncated", "truncated share"),
                        ("prm_min", "PRM min step score"), ("prm_sum", "PRM sum of step scores")]:  # fmt: skip
        a, b = summary[f"{name}_first10"], summary[f"{name}_last10"]
        if a is not None:
            lines.append(f"{label + ' (first/last 10)':40} {_fmt(a):>8} {_fmt(b):>8}")
    lines.append(f"hacking flags raised: {', '.join(summary['hacking_flags']) or 'none'}")
    lines.append(f"written: {run_dir / 'metrics.jsonl'}, {run_dir / 'summary.json'}, {plot}, {run_dir / 'final'}")
    return "\n".join(lines)
