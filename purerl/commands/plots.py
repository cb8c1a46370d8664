"""PNG plots of a run (and of a comparison of runs), drawn from their ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = [
    ("eval/accuracy", "held-out greedy accuracy"),
    ("eval/sampled_accuracy", "held-out sampled accuracy (T = 1)"),
    ("reward/accuracy", "sampled accuracy (train prompts)"),
    ("prm/min_raw", "PRM: min step score per response"),
    ("prm/sum_raw", "PRM: sum of step scores per response"),
    ("response/steps", "steps per response"),
    ("response/length", "response length (tokens)"),
    ("response/truncated", "share truncated at the cap"),
    ("actor/kl", "KL to the reference"),
]


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (a cut last line dropped with a warning)."""
    from purerl.io.logger import read_rows

    return read_rows(path)


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: str | Path) -> Path:
    """``run_dir/plots.png``: one panel per key metric over training steps."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    panels = [(k, t) for k, t in PANELS if series(rows, k)[0]]
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(4 * ((len(panels) + 1) // 2), 6.5), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        xs, ys = series(rows, key)
        ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(str(run_dir), fontsize=10)
    fig.tight_layout()
    out = run_dir / "plots.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_comparison(groups: dict[str, list[list[dict]]], out: str | Path, keys=None) -> Path:
    """One figure: for each arm (name -> runs over seeds), the mean and range of each metric."""
    keys = keys or ["eval/sampled_accuracy", "eval/accuracy", "response/steps", "response/length", "response/truncated"]
    titles = dict(PANELS)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for arm, runs in groups.items():
            curves = [dict(zip(*series(rows, key))) for rows in runs]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            mean = [sum(c[s] for c in curves) / len(curves) for s in steps]
            lo = [min(c[s] for c in curves) for s in steps]
            hi = [max(c[s] for c in curves) for s in steps]
            (line,) = ax.plot(steps, mean, label=f"{arm} (n={len(runs)})")
            ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
        ax.set_title(titles.get(key, key), fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
