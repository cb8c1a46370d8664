"""purerl's own trainer against TRL's GRPOTrainer on the same work, on CPU.

Usage: python benchmarks/bench_vs_trl.py [--sizes small,large] [--repeats 3] [--json out.json]
       [--peer ../shared/peers/trl_grpo_baseline.py] [--before PATH]

The work, the same in both arms: the tiny Qwen2 model and byte-level BPE tokenizer that the TRL peer
script (``../shared/peers/trl_grpo_baseline.py``) builds (random weights, seed 0), toy addition prompts
of 4 tokens each (the peer's, see :func:`build_work`), 8 prompts x 8 samples a step, every completion
exactly ``length`` tokens (``min_new_tokens``), verifiable rewards only, no reference model, one PPO
epoch of one minibatch, fp32, 2 threads. Sizes: ``small`` is the peer's default (hidden 128, 2
layers, 32 tokens), ``large`` hidden 512, 4 layers, 128 tokens.

Arms run as fresh processes, interleaved A B A B: ``trl`` is the peer script itself; ``purerl`` is
``purerl.training.trainer.Trainer`` (dataset task on the same prompts, ``algo.reward=vr``, ``kl_coef=0``,
``ppo_epochs=1``, ``minibatches=1``); ``--before PATH`` adds ``purerl-before``, the trainer from
another checkout (``git worktree add PATH <commit>``). A purerl step is timed from one logged step
to the next, so it includes everything the loop does (samples, metrics, monitors, logging). A step
counts when other processes used under 5% of the machine during it (the peer's own rule); the first
step of each run is dropped. Prints a table and the median purerl/TRL ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ForeignCPU, machine, median, require_idle, write_json

SIZES = {"small": {"hidden": 128, "layers": 2, "length": 32, "steps": 8},
         "large": {"hidden": 512, "layers": 4, "length": 128, "steps": 6}}  # fmt: skip
DEFAULT_PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "trl_grpo_baseline.py"
CLEAN = 0.05


def build_work(peer: Path, size: str, folder: Path) -> tuple[Path, Path]:
    """The peer's tiny model folder (built by the peer's own code) and the prompts as a JSONL file.

    The prompts are the peer's toy additions with each number reduced to its last digit ("23+45=" ->
    "3+5="). TRL gets the peer's tokenizer object, which merges two-digit numbers ("23" is one token),
    so every prompt it sees is 4 tokens long; transformers 5 reloads the saved copy as a
    ``Qwen2Tokenizer`` (the folder's model type), whose pre-tokenizer splits digits, and purerl loads
    that copy. The single-digit prompts are 4 tokens long under it: the same shapes, and no padding,
    as in TRL's batches (checked here, prompt by prompt).
    """
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.spec_from_file_location("trl_peer", peer)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    s = SIZES[size]
    args = argparse.Namespace(vocab_size=384, hidden_size=s["hidden"], layers=s["layers"], seed=0)
    model_dir = folder / f"model-{size}"
    peer_tokenizer, _ = module.build_tiny(str(model_dir), args)
    loaded = AutoTokenizer.from_pretrained(model_dir)
    prompts, lines = folder / "prompts.jsonl", []
    for row in module.toy_dataset(0, 64):
        a, b = (int(x) % 10 for x in row["prompt"].rstrip("=").split("+"))
        text = f"{a}+{b}="
        trl_len = len(peer_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        ours = len(loaded(text, add_special_tokens=False)["input_ids"])
        if ours != trl_len:
            raise SystemExit(f"prompt {text!r}: {ours} tokens for purerl, {trl_len} for TRL ({row['prompt']!r})")
        lines.append(json.dumps({"question": text, "answer": str(a + b)}) + "\n")
    prompts.write_text("".join(lines))
    return model_dir, prompts


def run_overrides(out: str, steps: int) -> list[str]:
    """A timed run: ``steps`` steps on 2 threads, no evaluation or checkpoint before the last step."""
    return [f"run.out_dir={out}", "run.threads=2", f"run.steps={steps}", "run.eval_every=100000",
            "run.checkpoint_every=100000", "run.tensorboard=false"]  # fmt: skip


def work_overrides(model, prompts, length: int) -> list[str]:
    """purerl's side of the work TRL's peer script does (the module docstring)."""
    return [
        f"policy.path={model}", f"data.train.path={prompts}", "data.task=dataset", "algo.reward=vr",
        "algo.vr_fraction=1.0", "algo.kl_coef=0", "algo.ppo_epochs=1", "algo.minibatches=1", "algo.lr=1e-5",
        "rollout.prompts_per_step=8", "rollout.k=8", f"rollout.max_new_tokens={length}",
        f"rollout.min_new_tokens={length}",
    ]  # fmt: skip


def purerl_child(model: str, prompts: str, length: int, steps: int) -> dict:
    """Runs in a fresh process: ``steps`` steps of purerl's trainer; per-step wall times and phases."""
    import torch

    from purerl.config import load_config
    from purerl.training.trainer import Trainer

    overrides = run_overrides(tempfile.mkdtemp(), steps) + work_overrides(model, prompts, length)
    trainer = Trainer(load_config(None, overrides))
    stamps, foreign, meter = [], [], ForeignCPU()
    log_step = trainer.logger.log_step

    def stamped(step, metrics):
        row = log_step(step, metrics)
        foreign.append(meter.stop())
        stamps.append(time.perf_counter())
        meter.start()
        return row

    trainer.logger.log_step = stamped
    meter.start()
    stamps.append(time.perf_counter())
    trainer.train()
    phases = [{k: v for k, v in row.items() if k.startswith("time/")} for row in trainer.history if "time/step" in row]
    return {"step_seconds": [b - a for a, b in zip(stamps, stamps[1:])], "foreign": foreign, "phases": phases,
            "torch_threads": torch.get_num_threads()}  # fmt: skip


def run_arm(arm: str, size: str, work: dict, args) -> dict:
    s = SIZES[size]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}
    steps = args.steps or s["steps"]
    if arm == "trl":
        out = tempfile.mkdtemp()
        cmd = [sys.executable, str(args.peer), "--steps", str(steps), "--out", out, "--hidden-size", str(s["hidden"]),
               "--layers", str(s["layers"]), "--max-completion-length", str(s["length"])]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"trl failed:\n{proc.stderr[-3000:]}")
        t = json.loads((Path(out) / "timings.json").read_text())
        return {"step_seconds": t["step_seconds"], "foreign": t["step_foreign_cpu_fraction"],
                "generate_seconds": t["generate_seconds"], "lengths": [t["mean_completion_length"]]}  # fmt: skip
    if arm == "purerl-before":
        env["PYTHONPATH"] = str(Path(args.before).resolve())
    cmd = [sys.executable, __file__, "--child", str(work["model"][size]), str(work["prompts"]), str(s["length"]),
           str(steps)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{arm} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def clean_steps(run: dict) -> list[float]:
    pairs = list(zip(run["step_seconds"], run["foreign"]))[1:]
    return [t for t, f in pairs if f is not None and f < CLEAN]


def summarize(runs: dict, sizes: list[str]) -> dict:
    table = {}
    for size in sizes:
        row = {}
        for arm, arm_runs in runs[size].items():
            steps = [t for r in arm_runs for t in clean_steps(r)]
            total = sum(len(r["step_seconds"]) - 1 for r in arm_runs)
            row[arm] = {"median_s": median(steps), "clean_steps": len(steps), "steps": total,
                        "run_medians": [median(clean_steps(r)) for r in arm_runs]}  # fmt: skip
            phases = [p for r in arm_runs for p in r.get("phases", [])[1:]]
            if phases:
                row[arm]["phases"] = {k: median([p.get(k) for p in phases]) for k in phases[0]}
            generate = [g for r in arm_runs for g in r.get("generate_seconds", [])[1:]]
            if generate:
                row[arm]["phases"] = {"time/rollout": median(generate)}
        trl = runs[size]["trl"]
        for arm in row:
            if arm != "trl":
                pairs = [median(clean_steps(a)) / median(clean_steps(b)) for a, b in zip(runs[size][arm], trl)
                         if median(clean_steps(a)) and median(clean_steps(b))]  # fmt: skip
                row[arm]["ratio_to_trl"] = row[arm]["median_s"] / row["trl"]["median_s"]
                row[arm]["pair_ratios"] = pairs
        table[size] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="steps a run (0: 8 small, 6 large)")
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--before", help="a checkout of an earlier purerl: adds the purerl-before arm")
    parser.add_argument("--work", help="folder for the models and prompts (default: a temporary one)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, prompts, length, steps = args.child
        print("RESULT " + json.dumps(purerl_child(model, prompts, int(length), int(steps))))
        return
    if not args.peer.exists():
        raise SystemExit(f"peer script not found: {args.peer} (pass --peer)")
    sizes = args.sizes.split(",")
    folder = Path(args.work or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    work = {"model": {}}
    for size in sizes:
        work["model"][size], work["prompts"] = build_work(args.peer, size, folder)
    arms = ["purerl", "trl"] + (["purerl-before"] if args.before else [])
    busy = require_idle()
    runs = {size: {arm: [] for arm in arms} for size in sizes}
    for rep in range(args.repeats):
        for size in sizes:
            for arm in arms:
                start = time.perf_counter()
                runs[size][arm].append(run_arm(arm, size, work, args))
                print(f"  repeat {rep + 1} {size} {arm}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    table = summarize(runs, sizes)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}; idle check: other processes "
          f"{busy if busy is None else f'{busy:.1%}'}; {args.repeats} runs an arm, interleaved")  # fmt: skip
    print(f"{'size':<6} {'arm':<14} {'median step s':>13} {'generation s':>12} {'clean/steps':>11} {'x TRL':>6}"
          "  per-run ratios")  # fmt: skip
    for size, row in table.items():
        for arm, r in row.items():
            ratio = f"{r['ratio_to_trl']:.2f}" if "ratio_to_trl" in r else "1.00"
            pairs = " ".join(f"{p:.2f}" for p in r.get("pair_ratios", []))
            gen = r.get("phases", {}).get("time/rollout")
            gen = f"{gen:>12.3f}" if gen is not None else f"{'-':>12}"
            print(f"{size:<6} {arm:<14} {r['median_s']:>13.3f} {gen} {r['clean_steps']:>5}/{r['steps']:<5} {ratio:>6}  "
                  f"{pairs}")  # fmt: skip
    write_json(args.json, {"machine": info, "idle_check_busy": busy, "sizes": SIZES, "table": table, "runs": runs})


if __name__ == "__main__":
    main()
