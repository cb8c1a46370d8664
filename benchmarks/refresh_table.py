"""The refresh's results from the streams `benchmarks/refresh_runs.py` kept (docs/refresh.md): per PRM and arm,
held-out greedy and sampled accuracy at the end (each seed, mean and sd), steps per answer over the last
10 steps, the first evaluation at which held-out greedy accuracy is more than 0.1 below its start, the
step at which the default guards would have acted (a replay of the stream), the step time and the
refresh's share of it; whether the issue's goal holds; the blind-spot probe before and after the refresh;
and the plot of the held-out curves.

    python benchmarks/refresh_table.py [--dir benchmarks/results/refresh] [--plot docs/refresh.png] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("frozen_vr10", "refresh_vr10", "last_vr10", "frozen_vrall", "refresh_all")
LABELS = {
    "frozen_vr10": "frozen PRM, VR on 10%",
    "refresh_vr10": "refresh on the 10% labels, blame=min",
    "last_vr10": "refresh on the 10% labels, blame=last",
    "frozen_vrall": "frozen PRM, VR on every prompt",
    "refresh_all": "refresh on every grade, blame=min",
}
PROBES = ROOT / "benchmarks" / "results" / "probe"


def rows(path: Path) -> list[dict]:
    return [r for r in (json.loads(x) for x in path.read_text().splitlines()) if "step" in r]


def guard_stop(path: Path) -> int | None:
    """The step at which the default guards (``purerl monitor``'s replay of the stream) would stop or roll
    back the run (None: never)."""
    from purerl.commands.monitor import monitor_report, parse_settings, read_stream

    guards, settings = parse_settings([])
    return monitor_report(read_stream(str(path))[1], guards, settings)["stop_step"]


def summary(stream: list[dict]) -> dict:
    evals = [r for r in stream if "eval/accuracy" in r]
    train = [r for r in stream if "reward/accuracy" in r]
    start = evals[0]["eval/accuracy"]
    fall = next((r["step"] for r in evals[1:] if r["eval/accuracy"] < start - 0.1 - 1e-12), None)
    refresh = [r["time/refresh"] for r in train if "time/refresh" in r]
    return {
        "greedy": evals[-1]["eval/accuracy"], "sampled": evals[-1]["eval/sampled_accuracy"], "start": start,
        "start_sampled": evals[0]["eval/sampled_accuracy"], "fall": fall,
        "steps_last10": statistics.mean(r["response/steps"] for r in train[-10:]),
        "empty_last10": statistics.mean(r.get("response/zero_steps", 0.0) for r in train[-10:]),
        "refresh_s": statistics.mean(refresh) if refresh else None,
        "step_s": statistics.mean(r["time/step"] for r in train if "time/step" in r),
        "curve": [(r["step"], r["eval/accuracy"], r["eval/sampled_accuracy"]) for r in evals],
        "steps_curve": [(r["step"], r["response/steps"]) for r in train],
    }  # fmt: skip


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    cols = ["PRM", "arm", "held-out greedy at the end (seeds)", "mean ± sd", "sampled at the end",
            "steps / answer (share empty), last 10", "greedy falls 0.1 below start at", "default guards act at",
            "s / step (refresh)"]  # fmt: skip
    head = "| " + " | ".join(cols) + " |"
    lines = [head, "|" + " --- |" * 9]
    for prm, arms in results.items():
        for arm in ARMS:
            runs = arms.get(arm, [])
            if runs:
                lines.append(_row(prm, arm, runs))
    return "\n".join(lines)


def _row(prm: str, arm: str, runs: list[dict]) -> str:
    g = [r["greedy"] for r in runs]
    refresh = [r["refresh_s"] for r in runs if r["refresh_s"] is not None]
    step_s = statistics.mean(r["step_s"] for r in runs)
    per_step = f"{step_s:.2f} ({statistics.mean(refresh):.2f})" if refresh else f"{step_s:.2f}"
    falls = ", ".join(str(r["fall"]) if r["fall"] is not None else "never" for r in runs)
    guards = ", ".join(str(r["guard"]) if r.get("guard") is not None else "never" for r in runs)
    seeds = ", ".join(f"{x:.3f}" for x in g)
    steps = statistics.mean(r["steps_last10"] for r in runs)
    empty = statistics.mean(r["empty_last10"] for r in runs)
    cells = [
        prm,
        LABELS.get(arm, arm),
        seeds,
        _ms(g),
        _ms([r["sampled"] for r in runs]),
        f"{steps:.2f} ({empty:.2f})",
        falls,
        guards,
        per_step,
    ]
    return "| " + " | ".join(cells) + " |"


def goal(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """The issue's goal per PRM: the refresh on the 10% labels ends at or above the start and above the frozen
    arm, on every seed."""
    out = []
    for prm, arms in results.items():
        frozen, fresh = arms.get("frozen_vr10", []), arms.get("refresh_vr10", [])
        if prm == "builtin" and frozen and fresh:  # the shipped PRM: the refresh must not make the default worse
            low_g, low_s = min(f["greedy"] for f in frozen), min(f["sampled"] for f in frozen)
            worse = sum(f["greedy"] < low_g or f["sampled"] < low_s for f in fresh)
            out.append(f"builtin: with the refresh, greedy or sampled at the end below the frozen default runs' "
                       f"lowest ({low_g:.3f} / {low_s:.3f}) on {worse} of {len(fresh)} seeds")  # fmt: skip
            continue
        if len(frozen) != len(fresh) or not fresh:
            continue
        ok = [f["greedy"] >= f["start"] and f["greedy"] > z["greedy"] for f, z in zip(fresh, frozen)]
        out.append(f"{prm}: goal met on {sum(ok)} of {len(ok)} seeds")
    return out


def plot(results: dict[str, dict[str, list[dict]]], path: Path) -> None:
    """Per PRM, held-out greedy accuracy (top) and steps per answer (bottom) over training: each arm's mean
    over seeds, each seed faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 7), squeeze=False, sharex=True)
    for col, (prm, arms) in enumerate(results.items()):
        top, bottom = axes[0][col], axes[1][col]
        for arm in ARMS:
            runs = arms.get(arm, [])
            if not runs:
                continue
            for ax, key, index in ((top, "curve", 1), (bottom, "steps_curve", 1)):
                n = min(len(r[key]) for r in runs)
                xs = [c[0] for c in runs[0][key][:n]]
                mean = [statistics.mean(r[key][i][index] for r in runs) for i in range(n)]
                line = ax.plot(xs, mean, label=f"{LABELS[arm]} ({len(runs)} seeds)")[0]
                for r in runs:
                    ax.plot(xs, [c[index] for c in r[key][:n]], color=line.get_color(), alpha=0.2, linewidth=0.8)
        top.axhline(next(iter(arms.values()))[0]["start"], color="grey", linestyle=":", linewidth=1)
        top.set_title(f"{prm} PRM")
        top.set_ylabel("held-out greedy accuracy")
        top.set_ylim(-0.02, 1.02)
        top.legend(fontsize=7)
        bottom.set_ylabel("steps per answer (training samples)")
        bottom.set_xlabel("RL step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def probe_table(prms=("exact", "labels", "builtin"), arms=("refresh_vr10", "last_vr10"), seed: int = 0) -> str:
    """The blind-spot probe (``purerl probe-prm``, 256 built-in problems) of each PRM before RL and of its
    refreshed ``final_prm/`` at the end of the seed's run (step 80; the built-in PRM's, step 120): per
    transformation, the exploit share by min (``>=`` the honest solution for a wrong one, ``>`` for a
    neutral one); closed / opened: down / up by 0.1."""
    lines = []
    for prm in prms:
        before = json.loads((PROBES / f"{prm}.json").read_text())
        after = {a: json.loads((PROBES / f"refreshed_{prm}_{a}_seed{seed}.json").read_text()) for a in arms
                 if (PROBES / f"refreshed_{prm}_{a}_seed{seed}.json").exists()}  # fmt: skip
        if not after:
            continue
        head = ["transformation", "group", "before RL"] + [f"after {LABELS[a].split(', ')[-1]}" for a in after]
        lines += [f"**{prm} PRM** (seed {seed}; honest mean min: before {before['honest']['mean_min']:+.3f}, after "
                  + ", ".join(f"{LABELS[a].split(', ')[-1]} {d['honest']['mean_min']:+.3f}" for a, d in after.items())
                  + ")", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]  # fmt: skip
        for name, row in before["transformations"].items():
            cells = [name, row["group"], f"{row['min']['exploit']:.3f}"]
            for d in after.values():
                x = d["transformations"][name]["min"]["exploit"]
                delta = x - row["min"]["exploit"]
                mark = " (closed)" if delta <= -0.1 else " (opened)" if delta >= 0.1 else ""
                cells.append(f"{x:.3f}{mark}")
            lines.append("| " + " | ".join(cells) + " |")
        mean = [f"{before['summary']['wrong']['min']['mean_exploit']:.3f}"]
        mean += [f"{d['summary']['wrong']['min']['mean_exploit']:.3f}" for d in after.values()]
        lines += ["| mean over the wrong ones | | " + " | ".join(mean) + " |", ""]
    return "\n".join(lines)


PILOTS = ROOT / "benchmarks" / "results" / "refresh_pilots"
SETTINGS = ("labels", "blame", "weighting", "gate", "objective", "anchor", "smoothing", "buffer", "lr")


def pilot_table(folder: Path = PILOTS) -> str:
    """The single-seed pilots (their settings as recorded in each stream's first row, the ones that differ
    from the defaults): held-out greedy at step 40 and at the end, and the fall step."""
    from purerl.config.schema import RefreshConfig

    default = RefreshConfig()
    cols = ["pilot", "PRM (separator)", "steps", "settings apart from the defaults", "greedy at 40", "at the end",
            "falls at"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for path in sorted(folder.glob("*.jsonl")):
        head = json.loads(path.read_text().splitlines()[0])["run"]
        conf, stream = head["config"], summary(rows(path))
        odd = [f"{k}={conf[f'refresh.{k}']}" for k in SETTINGS
               if conf.get(f"refresh.{k}") is not None and conf[f"refresh.{k}"] != getattr(default, k)]  # fmt: skip
        prm = Path(conf["prm.path"]).parent.name if conf.get("prm.path") else "built-in"
        at40 = next((g for step, g, _ in stream["curve"] if step == 40), None)
        cells = [
            head["name"],
            f"{prm} ({conf['prm.separator']!r})",
            str(conf["run.steps"]),
            ", ".join(odd) or "-",
            f"{at40:.3f}" if at40 is not None else "-",
            f"{stream['greedy']:.3f}",
            str(stream["fall"] or "never"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DEFAULTS = ROOT / "benchmarks" / "results" / "hacking"
"""Where the shipped built-in PRM's recorded default runs (frozen, seeds 0-2) are, beside which the
built-in PRM's refresh runs are read."""


def read(path: Path) -> dict:
    """One kept stream's :func:`summary` and where the default guards would have acted."""
    return summary(rows(path)) | {"guard": guard_stop(path)}


def collect(folder: Path) -> dict[str, dict[str, list[dict]]]:
    results: dict[str, dict[str, list[dict]]] = {}
    if any(folder.glob("builtin_*.jsonl")):
        for path in sorted(DEFAULTS.glob("default_seed*.jsonl")):
            results.setdefault("builtin", {}).setdefault("frozen_vr10", []).append(read(path))
    for path in sorted(folder.glob("*.jsonl")):
        name = path.stem
        prm, rest = name.split("_", 1)
        arm = rest.rsplit("_seed", 1)[0]
        results.setdefault(prm, {}).setdefault(arm, []).append(read(path))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=str(ROOT / "benchmarks" / "results" / "refresh"))
    ap.add_argument("--plot", help="write the curves here (PNG)")
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    results = collect(Path(args.dir))
    text = table(results) + "\n\n" + "\n".join(goal(results)) + "\n\n" + probe_table() + "\n\n" + pilot_table()
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.plot:
        plot({k: v for k, v in results.items() if k != "builtin"}, Path(args.plot))


if __name__ == "__main__":
    main()
