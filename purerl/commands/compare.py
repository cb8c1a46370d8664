"""`purerl compare`: the same budget and seeds under several reward / credit settings.

Arms: ``sum`` and ``min`` (PRM rewards only, the paper's Figure 2), ``soft_min`` (PRM rewards only,
PURE Eq. 5), ``vr`` (verifiable rewards only, the reference) and ``min+vr`` / ``soft_min+vr`` (PURE's
PRM+VR). An arm may add overrides after a colon: ``soft_min:T=0.01`` (``T`` is ``algo.temperature``),
``min+vr:algo.vr_fraction=0.5,algo.whiten=true``; or ``--arms arms.yaml`` names arms and their overrides
(``{name: [key=value, ...]}``, each list starting from the config, not from a named arm).

Each (arm, seed) is an ordinary ``purerl train`` run in
its own folder, launched as a subprocess (two at a time on two cores); finished runs are reused, so an
interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from purerl.commands.plots import plot_comparison, read_metrics, series
from purerl.commands.report import run_summary
from purerl.config import load_config
from purerl.models.builtin import policy_path, prm_path

ARMS = {
    "sum": ["algo.reward=prm", "algo.mode=sum"],
    "min": ["algo.reward=prm", "algo.mode=min"],
    "soft_min": ["algo.reward=prm", "algo.mode=soft_min"],
    "vr": ["algo.reward=vr"],
    "min+vr": ["algo.reward=prm+vr", "algo.mode=min"],
    "soft_min+vr": ["algo.reward=prm+vr", "algo.mode=soft_min"],
}
DEFAULT_ARMS = ("sum", "min", "vr", "min+vr")
SHORT_KEYS = {"T": "algo.temperature"}


def parse_arms(specs: list[str] | None) -> dict[str, list[str]]:
    """``{name: overrides}`` from ``--arms`` (arm specs, or one YAML file of named override lists)."""
    specs = list(specs or DEFAULT_ARMS)
    if len(specs) == 1 and specs[0].endswith((".yaml", ".yml")):
        import yaml

        try:
            arms = yaml.safe_load(Path(specs[0]).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"--arms {specs[0]}: cannot read it ({err})") from None
        if not isinstance(arms, dict) or not all(isinstance(v, list) for v in arms.values()):
            raise ValueError(f"--arms {specs[0]}: expected a mapping of arm names to lists of key=value overrides")
        return {str(name): [str(o) for o in overrides] for name, overrides in arms.items()}
    out = {}
    for spec in specs:
        base, _, extra = spec.partition(":")
        if base not in ARMS:
            raise ValueError(f"unknown arm {base!r} in {spec!r}; choose from {list(ARMS)} (then :key=value,...)")
        overrides = list(ARMS[base])
        for item in filter(None, extra.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"arm {spec!r}: {item!r} is not key=value")
            overrides.append(f"{SHORT_KEYS.get(key, key)}={value}")
        out[spec] = overrides
    return out


def _folder_name(arm: str) -> str:
    return arm.replace(":", "-").replace("=", "").replace(",", "-").replace("/", "_")


def _launch(config: str | None, overrides: list[str], folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "purerl", "train", *([config] if config else []), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (folder / "train.log").open("w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _continue(folder: Path) -> list[str]:
    """An unfinished arm resumes from its checkpoint; one stopped before its first checkpoint starts again."""
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step-*/manifest.json")):
        return ["--resume"]
    return ["--overwrite"] if (folder / "metrics.jsonl").exists() else []


def run_arms(config, overrides, arms: dict[str, list[str]], seeds, out: Path, jobs: int = 2) -> dict[str, list[Path]]:
    todo, folders = [], {arm: [] for arm in arms}
    for seed in seeds:
        for arm, arm_overrides in arms.items():
            folder = out / f"{_folder_name(arm)}-seed{seed}"
            folders[arm].append(folder)
            if not (folder / "summary.json").exists():
                args = [*overrides, *arm_overrides, f"run.seed={seed}", f"run.out_dir={folder}", "run.threads=1"]
                todo.append((folder, [*args, *_continue(folder)]))
    running: list[tuple[Path, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < jobs:
            folder, args = todo.pop(0)
            print(f"running {folder.name}", flush=True)
            running.append((folder, _launch(config, args, folder)))
        folder, proc = running.pop(0)
        if proc.wait() != 0:
            raise ValueError(f"arm {folder.name} stopped (exit code {proc.returncode}): {_last_line(folder)}; its "
                             f"log: {folder / 'train.log'}")  # fmt: skip
    return folders


def _last_line(folder: Path) -> str:
    """The last line an arm's ``purerl train`` wrote (its one-line error)."""
    try:
        lines = (folder / "train.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1].strip() if lines else "no output"


def mean_curve(rows: list[list[dict]], key: str) -> dict[int, float]:
    """Seed-mean of ``key`` at each step that every seed evaluated."""
    curves = [dict(zip(*series(r, key))) for r in rows]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return {step: sum(c[step] for c in curves) / len(curves) for step in steps}


def first_step_reaching(rows: list[list[dict]], target: float, key: str = "eval/sampled_accuracy") -> int | None:
    """First evaluated step at which the seed-mean of ``key`` (held-out accuracy) reaches ``target``."""
    return next((step for step, value in mean_curve(rows, key).items() if value >= target), None)


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


COLUMNS = [
    ("eval_sampled_accuracy_start", "sampled acc start"),
    ("eval_sampled_accuracy_end", "sampled acc end"),
    ("eval_accuracy_start", "greedy acc start"),
    ("eval_accuracy_end", "greedy acc end"),
    ("steps_per_response_first10", "steps/resp first10"),
    ("steps_per_response_last10", "steps/resp last10"),
    ("length_last10", "length last10"),
    ("truncated_last10", "truncated last10"),
]


def comparison_table(runs: dict[str, list[list[dict]]]) -> str:
    """Mean ± sd over seeds of each arm's start / end numbers, and PRM+VR's speed against VR-only."""
    width = max([8, *(len(arm) for arm in runs)])
    lines = [f"{'arm':<{width}}" + "".join(f" {title:>19}" for _, title in COLUMNS) + "  flags"]
    for arm, seeds in runs.items():
        s = [run_summary(r) for r in seeds]
        flags = sorted({f for x in s for f in x["hacking_flags"]})
        cells = "".join(f" {_ms([x[key] for x in s]):>19}" for key, _ in COLUMNS)
        lines.append(f"{arm:<{width}}{cells}  {','.join(flags) or '-'}")
    if "vr" in runs and "min+vr" in runs:
        lines.append("")
        for key, name in (("eval/sampled_accuracy", "sampled"), ("eval/accuracy", "greedy")):
            lines.append(_steps_to_reach(runs, key, name))
    return "\n".join(lines)


def _steps_to_reach(runs: dict[str, list[list[dict]]], key: str, name: str) -> str:
    """PRM+VR's steps to reach VR-only's final held-out accuracy (PURE reports about 30%)."""
    finals = [series(r, key)[1][-1] for r in runs["vr"]]
    target = statistics.mean(finals)
    vr_steps = first_step_reaching(runs["vr"], target, key)
    both = first_step_reaching(runs["min+vr"], target, key)
    head = f"VR-only final held-out {name} accuracy {target:.3f} (seed mean): first reached at step {vr_steps} "
    head += "by VR-only, "
    if both is None:
        mean = mean_curve(runs["min+vr"], key)
        best = max(mean, key=lambda t: (mean[t], -t))
        return head + f"not within the run by min+vr (its best seed mean: {mean[best]:.3f} at step {best})"
    share = f" ({both / vr_steps:.0%} of VR-only's steps)" if vr_steps else ""
    return head + f"at step {both} by min+vr{share}"


def run_comparison(config, overrides, seeds, out_dir, arms=None) -> str:
    out = Path(out_dir)
    arms = parse_arms(arms)
    for arm, arm_overrides in arms.items():  # every arm's config is checked before any run starts
        try:
            load_config(config, [*overrides, *arm_overrides])
        except ValueError as err:
            raise ValueError(f"arm {arm}: {err}") from None
    # Build the shared models once, so that parallel arms never train the same one at the same time.
    cfg = load_config(config, list(overrides))
    policy_path(cfg)
    prm_path(cfg)
    folders = run_arms(config, list(overrides), arms, seeds, out)
    runs = {arm: [read_metrics(f / "metrics.jsonl") for f in fs] for arm, fs in folders.items()}
    plot = plot_comparison(runs, out / "comparison.png")
    table = comparison_table(runs)
    (out / "comparison.txt").write_text(table + "\n")
    (out / "comparison.json").write_text(
        json.dumps({a: [run_summary(r) for r in rs] for a, rs in runs.items()}, indent=2)
    )
    return f"{table}\n\nwritten: {plot}, {out / 'comparison.txt'}"
