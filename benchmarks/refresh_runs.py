"""The online PRM refresh against the frozen PRM (docs/refresh.md): `purerl train` runs, kept as streams.

For each of the two `train-prm` PRMs that RL hacks (the label-steps PRM and the exact-label PRM, made by the
first two stages of `benchmarks/prm_pipeline_builtin.py`) and seeds 0, 1, 2, 80 steps each, four arms:

- `frozen_vr10`: the frozen PRM, VR on 10% of prompts (the default reward);
- `refresh_vr10` / `last_vr10`: the refresh learning from the grades of that same 10% (`refresh.labels=vr`),
  blaming a wrong answer's lowest blamable step (`refresh.blame=min`) or its last step (`last`);
- `frozen_vrall`: the frozen PRM, VR on every prompt with a gold answer (`algo.vr_fraction=1.0`);
- `refresh_all`: the default reward, the refresh learning from every prompt's grade (`refresh.labels=all`);

and the shipped built-in PRM's default run with the refresh as it comes (`builtin_refresh_vr10`, 120 steps,
seeds 0-2), beside the recorded default runs of `benchmarks/hacking_runs.py`. Every guard is at `warn`, so
each run goes to its end. Two runs at a time, one thread each; finished runs are reused.

    python benchmarks/refresh_runs.py [--only NAME ...] [--jobs 2] [--out runs/refresh]

Writes `<out>/<name>/` and `benchmarks/results/refresh/<name>.jsonl` (the trimmed metrics stream, after a row
naming the run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from hacking_runs import finished, launch, trimmed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "refresh"
PRMS = {"labels": "runs/prm_builtin/prm_labels/final", "exact": "runs/prm_builtin/prm_exact/final"}
ARMS = {
    "frozen_vr10": [],
    "refresh_vr10": ["refresh.enabled=true", "refresh.labels=vr", "refresh.blame=min"],
    "last_vr10": ["refresh.enabled=true", "refresh.labels=vr", "refresh.blame=last"],
    "frozen_vrall": ["algo.vr_fraction=1.0"],
    "refresh_all": ["refresh.enabled=true", "refresh.labels=all", "refresh.blame=min"],
}
"""The issue's four arms, and the refresh on the 10% labels also with the other reading of a wrong answer's
grade (``refresh.blame``: ``min``, its lowest blamable step, the default; ``last``, its final step)."""


def runs() -> dict[str, list[str]]:
    out = {}
    for prm, path in PRMS.items():
        for arm, extra in ARMS.items():
            for seed in (0, 1, 2):
                prm_keys = ["prm.kind=token_classification", f"prm.path={path}"]
                out[f"{prm}_{arm}_seed{seed}"] = [*prm_keys, "run.steps=80", f"run.seed={seed}", *extra]
    for seed in (0, 1, 2):
        out[f"builtin_refresh_vr10_seed{seed}"] = ["refresh.enabled=true", "refresh.blame=min", f"run.seed={seed}"]
    return out


def keep(name: str, overrides: list[str], folder: Path) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps(trimmed(json.loads(x)) | {k: v for k, v in json.loads(x).items() if k.startswith(("refresh/",
            "time/refresh"))}) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]  # fmt: skip
    head = {"run": {"name": name, "overrides": overrides, "command": "purerl train " + " ".join(overrides)}}
    path = RESULTS / f"{name}.jsonl"
    path.write_text("\n".join([json.dumps(head), *rows]) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/refresh")
    args = ap.parse_args()
    table, out = runs(), ROOT / args.out
    names = args.only or sorted(table, key=lambda n: (n.startswith("builtin"), n[-1], n))  # seed 0 of every arm first
    for name in names:  # streams of runs that finished while no runner watched them, and headers brought up to date
        if finished(out / name):
            keep(name, table[name], out / name)
    todo = [n for n in names if not finished(out / n)]
    running: dict[str, tuple] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            name = todo.pop(0)
            running[name] = (launch(name, table[name], out), time.time())
            print(f"started {name}", flush=True)
        time.sleep(5)
        for name, (proc, start) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                print(f"{name}: exit {proc.returncode} after {time.time() - start:.0f} s", flush=True)
                if finished(out / name):
                    keep(name, table[name], out / name)


if __name__ == "__main__":
    main()
