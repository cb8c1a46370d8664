"""The PRM tools end to end on the built-in task, whose steps can be checked exactly (docs/prm.md):

1. `purerl label-steps` labels solutions the built-in policy samples on N training problems (k
   completions per prefix), compared with the exact labels (benchmarks/label_steps_builtin.py);
2. `purerl train-prm` trains a PRM on those labels (configs/prm/builtin.yaml), and, for comparison,
   one on the exact labels of the same solutions;
3. `purerl eval-prm` scores both, the shipped built-in PRM, and the exact checker (`--prm rule`, a
   sanity check: F1 1.0) on solutions to other problems labelled exactly (threshold chosen on 30%);
4. `purerl train` runs with the PRM trained on label-steps' labels, by config alone, next to the
   built-in PRM, same seed and steps.

    python benchmarks/prm_pipeline_builtin.py [--n 2048] [--k 8] [--test-n 256] [--steps 40] [--out runs/prm_builtin]

Prints a table and writes ``<out>/result.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-3000:]}")
    print(f"  {time.perf_counter() - start:6.1f} s  {' '.join(args[:3])}", flush=True)
    return done.stdout


def labels(out: Path, n: int, k: int, seed: int) -> dict:
    run("benchmarks/label_steps_builtin.py", "--n", str(n), "--k", str(k), "--seed", str(seed), "--out",
        str(out / "result.json"))  # fmt: skip
    return json.loads((out / "result.json").read_text())


def train_prm(data: Path, out: Path) -> dict:
    run("-m", "purerl", "train-prm", "configs/prm/builtin.yaml", f"data.path={data}", f"out_dir={out}", "--overwrite")
    return json.loads((out / "final" / "purerl_prm.json").read_text())


def eval_prm(prm: str, test: Path, out: Path, *extra: str) -> dict:
    run("-m", "purerl", "eval-prm", str(test), "--prm", prm, "--out", str(out), *extra)
    return json.loads(out.read_text())


def step_accuracy(folder: Path, test: Path) -> dict:
    """Share of the test steps where the PRM's sign (score > 0: correct) matches the exact label, over
    all steps and over the steps up to the first wrong one."""
    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm
    from purerl.prmtools.stepdata import StepDataConfig, load_step_examples

    examples = load_step_examples(StepDataConfig(path=str(test))).examples
    scores = load_prm(PRMConfig(path=str(folder))).score([e.prompt for e in examples], [e.steps for e in examples])
    hits, upto = [], []
    for e, row in zip(examples, scores):
        end = e.first_error() if e.first_error() >= 0 else len(e.steps) - 1
        for k, (s, ok) in enumerate(zip(row, e.labels)):
            hits.append((s > 0) == ok)
            if k <= end:
                upto.append((s > 0) == ok)
    return {"all": sum(hits) / len(hits), "to_first_error": sum(upto) / len(upto), "steps": len(hits)}


def rl_run(out: Path, steps: int, *prm: str) -> dict:
    run("-m", "purerl", "train", f"run.steps={steps}", "run.eval_every=10", f"run.out_dir={out}", "--overwrite", *prm)
    return json.loads((out / "summary.json").read_text())


def builtin_prm() -> str:
    """The shipped built-in PRM's folder (the default config's learned PRM)."""
    from purerl.config import load_config
    from purerl.models.builtin import prm_path

    return str(prm_path(load_config(None)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="training problems (one sampled solution each)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--test-n", type=int, default=256, help="test problems (exact labels)")
    ap.add_argument("--steps", type=int, default=40, help="RL steps of each `purerl train` run")
    ap.add_argument("--out", default="runs/prm_builtin")
    args = ap.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    result = {"label_steps": labels(out / "train", args.n, args.k, seed=0)}
    test = labels(out / "test", args.test_n, 1, seed=1)  # k = 1: only its exact labels are used
    result["test_solutions"] = test["solutions"]
    result["train_prm"] = {"label_steps": train_prm(out / "train" / "labelled.jsonl", out / "prm_labels"),
                           "exact": train_prm(out / "train" / "exact.jsonl", out / "prm_exact")}  # fmt: skip
    exact_test = out / "test" / "exact.jsonl"
    result["eval_prm"] = {
        "label_steps": eval_prm(str(out / "prm_labels" / "final"), exact_test, out / "eval_labels.json"),
        "exact": eval_prm(str(out / "prm_exact" / "final"), exact_test, out / "eval_exact.json"),
        "builtin": eval_prm(builtin_prm(), exact_test, out / "eval_builtin.json"),
        "rule": eval_prm("rule", exact_test, out / "eval_rule.json"),
    }
    result["step_accuracy"] = {name: step_accuracy(folder, exact_test) for name, folder in
                               (("label_steps", out / "prm_labels" / "final"), ("exact", out / "prm_exact" / "final"),
                                ("builtin", Path(builtin_prm())))}  # fmt: skip
    result["train"] = {}
    for name, folder in (("label_steps_prm", out / "prm_labels"), ("exact_prm", out / "prm_exact")):
        prm = ["prm.kind=token_classification", f"prm.path={folder / 'final'}"]  # read at its own "\n"
        result["train"][name] = rl_run(out / f"rl_{name}", args.steps, *prm)
    result["train"]["builtin_prm"] = rl_run(out / "rl_builtin", args.steps)
    result["seconds"] = time.perf_counter() - start
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("eval_prm", "train")}, indent=1)[:6000])


if __name__ == "__main__":
    main()
