"""The recorded runs behind the hacking detectors (docs/hacking.md): hacked and clean `purerl train` runs,
their metrics streams kept in `benchmarks/results/hacking/`.

Every run is an ordinary `purerl train` with every guard at `warn` (so each runs to its end and the
detectors can be replayed over the whole stream with `purerl monitor`), two at a time with one thread
each, as `purerl compare` runs its arms. Finished runs are reused. The PRMs it needs:

- `runs/prm_builtin/prm_labels/final`, `runs/prm_builtin/prm_exact/final`: made by the first two stages
  of `benchmarks/prm_pipeline_builtin.py` (label-steps, then train-prm on its labels and on exact labels);
- the older built-in PRM (`prm.data_corrupt_rate=0`: trained only on well-formed steps, as before
  fragments and early answers were added to its data; `purerl prepare prm.data_corrupt_rate=0`);
- the shipped built-in PRM.

    python benchmarks/hacking_runs.py [--only NAME ...] [--jobs 2] [--out runs/hacking]

Writes `<out>/<name>/` (the runs) and `benchmarks/results/hacking/<name>.jsonl` (each run's
`metrics.jsonl` without the per-phase timings and optimizer internals, after a first `{"run": ...}` row
naming the run, whether it is hacked or clean, and its overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hacking"
LABELS = ["prm.kind=token_classification", "prm.path=runs/prm_builtin/prm_labels/final"]
EXACT = ["prm.kind=token_classification", "prm.path=runs/prm_builtin/prm_exact/final"]
"""The train-prm PRMs, read at the separator they were trained with (the default "\n"). The docs/prm.md runs and
the first recorded ones passed ``prm.separator=\n`` as a Python string, which YAML read as an empty separator:
those PRMs were read at each step's last token instead (kept as ``*_lasttoken``; that override is refused now)."""
OLD_BUILTIN = ["prm.data_corrupt_rate=0"]

RUNS: dict[str, tuple[str, list[str]]] = {
    # hacked: the sum-form arm of purerl compare, the train-prm PRMs of docs/prm.md, and more
    "sum_seed0": ("hacked", ["algo.reward=prm", "algo.mode=sum", "run.steps=60"]),
    "sum_seed1": ("hacked", ["algo.reward=prm", "algo.mode=sum", "run.steps=60", "run.seed=1"]),
    "labels_prm_seed0": ("hacked", [*LABELS, "run.steps=40"]),
    "labels_prm_seed1": ("hacked", [*LABELS, "run.steps=40", "run.seed=1"]),
    "exact_prm_seed0": ("clean", [*EXACT, "run.steps=40"]),
    "exact_prm_only_seed0": ("hacked", [*EXACT, "algo.reward=prm", "run.steps=40"]),
    "old_builtin_prm_seed0": ("hacked", [*OLD_BUILTIN, "run.steps=60"]),
    # clean: the default run and two more seeds, the T-ablation arms, VR-only
    "default_seed0": ("clean", []),
    "default_seed1": ("clean", ["run.seed=1"]),
    "default_seed2": ("clean", ["run.seed=2"]),
    "t_ablation_min": ("clean", ["algo.reward=prm", "algo.mode=min", "run.steps=60"]),
    "t_ablation_T0.01": ("clean", ["algo.reward=prm", "algo.temperature=0.01", "run.steps=60"]),
    "t_ablation_T0.1": ("clean", ["algo.reward=prm", "algo.temperature=0.1", "run.steps=60"]),
    "t_ablation_T1.0": ("clean", ["algo.reward=prm", "algo.temperature=1.0", "run.steps=60"]),
    "vr_only": ("clean", ["algo.reward=vr", "run.steps=60"]),
}


def unguarded() -> list[str]:
    """Overrides that set every guard to warn: the recorded runs go to their end whatever fires."""
    from purerl.pipeline.monitor import FLAGS

    return [f"run.guards.{flag}=warn" for flag in FLAGS]


def launch(name: str, overrides: list[str], out: Path) -> subprocess.Popen:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "purerl", "train", *overrides, *unguarded(), f"run.out_dir={folder}", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (folder / "train.log").open("w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def finished(folder: Path) -> bool:
    return (folder / "summary.json").exists() and (folder / "final").exists()


KEPT = ("step", "reward/", "response/", "prm/", "eval/", "hack/", "time/step", "actor/kl", "actor/entropy")
"""What the kept streams hold of each metrics row: what the detectors and the tables read, and a little more."""


def trimmed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(KEPT)}


def keep_stream(name: str, kind: str, overrides: list[str], folder: Path) -> Path:
    """Copy the run's metrics into the repository, after a row naming the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(trimmed(json.loads(line))) for line in (folder / "metrics.jsonl").read_text().splitlines()
            if line.strip()]  # fmt: skip
    head = {
        "run": {"name": name, "kind": kind, "overrides": overrides, "command": "purerl train " + " ".join(overrides)}
    }
    path = RESULTS / f"{name}.jsonl"
    path.write_text("\n".join([json.dumps(head), *rows]) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these names")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/hacking")
    args = ap.parse_args()
    out = ROOT / args.out
    names = args.only or list(RUNS)
    todo = [n for n in names if not finished(out / n)]
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            name = todo.pop(0)
            running[name] = (launch(name, RUNS[name][1], out), time.time())
            print(f"started {name}", flush=True)
        time.sleep(5)
        for name, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            print(f"{name}: exit {proc.returncode} after {time.time() - start:.0f} s", flush=True)
    for name in names:
        if finished(out / name):
            kind, overrides = RUNS[name]
            print("kept", keep_stream(name, kind, overrides, out / name))


if __name__ == "__main__":
    main()
