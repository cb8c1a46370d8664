"""How long a config error takes to come back: `purerl train run.steps=abc` as a user runs it.

Usage: python benchmarks/bench_config_error.py [--repeats 7] [--json out.json]
Runs each command as a fresh process (interleaved) and prints the median wall time: the config error,
an error only validation against the registries finds (`prm.kind=qwen_prm` without a path), a bare
`python -c pass`, and `import torch` for scale. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "purerl train run.steps=abc": [sys.executable, "-m", "purerl", "train", "run.steps=abc"],
    "purerl train prm.kind=qwen_prm": [sys.executable, "-m", "purerl", "train", "prm.kind=qwen_prm"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the medians here")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():  # interleaved, so that a busy moment hits every command alike
            start = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            times[name].append(time.perf_counter() - start)
            if name.startswith("purerl") and out.returncode != 2:
                raise SystemExit(f"{name}: expected exit 2 (a config error), got {out.returncode}: {out.stderr}")
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<34} {seconds:6.3f} s  (median of {args.repeats})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeats": args.repeats, "median_seconds": medians}, f, indent=2)


if __name__ == "__main__":
    main()
