"""Do the guards rescue the hacked runs? (docs/hacking.md)

The two `purerl train` runs with `train-prm` PRMs that RL hacks (docs/prm.md; the PRMs made by the first two
stages of `benchmarks/prm_pipeline_builtin.py`), 40 steps each, with the default guards (`heldout_drop` and
`accuracy_drop` roll back) and with both set to `stop` instead; one run at a time. For each: where it stopped,
the checkpoint it named, that checkpoint's held-out accuracy (the evaluation logged at its step), the steps
run (roll-backs included) and the wall time, beside the unguarded run's end (the recorded stream).

    python benchmarks/hacking_guards.py [--out runs/hacking_guards] [--steps 40]

Writes `<out>/result.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS, EXACT = "runs/prm_builtin/prm_labels/final", "runs/prm_builtin/prm_exact/final"
GUARDS = {"default (rollback)": [], "stop": ["run.guards.heldout_drop=stop", "run.guards.accuracy_drop=stop"]}
CASES = [("label-steps PRM, seed 0", LABELS, 0, "default (rollback)"), ("label-steps PRM, seed 0", LABELS, 0, "stop"),
         ("label-steps PRM, seed 1", LABELS, 1, "default (rollback)"), ("label-steps PRM, seed 1", LABELS, 1, "stop"),
         ("exact-label PRM, seed 0", EXACT, 0, "default (rollback)")]  # fmt: skip
"""The two hacked train-prm runs (label-steps, seeds 0 and 1) under both guard settings, and the exact-label
run (which RL did not hack) under the default guards: they must leave it alone."""


def run(prm: str, seed: int, guards: list[str], out: Path, steps: int) -> dict:
    cmd = [sys.executable, "-m", "purerl", "train", "prm.kind=token_classification", f"prm.path={prm}",
           f"run.seed={seed}", f"run.steps={steps}", f"run.out_dir={out}", "--overwrite", *guards]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "2"})
    seconds = time.perf_counter() - start
    line = next((x for x in reversed(done.stderr.splitlines()) if x.startswith("purerl train: ")), "")
    named = re.search(r"last clean checkpoint: (\S+)", line)
    folder = named.group(1) if named else None
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    moved = out / "rolled_back.jsonl"
    abandoned = [json.loads(x) for x in moved.read_text().splitlines()] if moved.exists() else []
    steps_run = len([r for r in rows if r["step"] > 0]) + len(
        [r for r in abandoned if r.get("file") == "metrics.jsonl"]
    )
    at = int(folder.rsplit("-", 1)[1]) if folder else rows[-1]["step"]
    evals = {r["step"]: r for r in rows if "eval/accuracy" in r}
    events = (
        [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
        if (out / "events.jsonl").exists()
        else []
    )
    return {"exit": done.returncode, "message": line, "checkpoint": folder, "checkpoint_step": at,
            "greedy": evals.get(at, {}).get("eval/accuracy"), "sampled": evals.get(at, {}).get("eval/sampled_accuracy"),
            "start_greedy": evals[0]["eval/accuracy"], "start_sampled": evals[0]["eval/sampled_accuracy"],
            "last_step": rows[-1]["step"], "steps_run": steps_run, "seconds": seconds,
            "rollbacks": sum(e["event"] == "rollback" for e in events)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/hacking_guards")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    out = ROOT / args.out
    result = {}
    for name, prm, seed, guard_name in CASES:
        key = f"{name}, {guard_name}"
        result[key] = run(prm, seed, GUARDS[guard_name], out / re.sub(r"\W+", "_", key).strip("_"), args.steps)
        print(key, json.dumps(result[key]), flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print("| PRM, guards | stopped at | checkpoint named | its greedy / sampled | start | steps run | roll-backs | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, r in result.items():
        print(f"| {key} | {r['last_step']} | step {r['checkpoint_step']} | {r['greedy']:.3f} / {r['sampled']:.3f} | "
              f"{r['start_greedy']:.3f} / {r['start_sampled']:.3f} | {r['steps_run']} | {r['rollbacks']} | "
              f"{r['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
