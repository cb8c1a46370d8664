"""Step time of PURE inside TRL against plain TRL GRPO on the same model, batch and lengths (CPU).

Usage: python benchmarks/bench_trl.py [--repeats 3] [--steps 6] [--json out.json]

Arms, each a fresh process running ``--steps`` optimizer steps, interleaved A B C A B C ...:
  trl        GRPOTrainer with purerl's verifiable reward (GRPO advantages)
  pure-rule  PureGRPOTrainer with the rule PRM: purerl's own work (segmentation, credit, metrics)
  pure       PureGRPOTrainer with the built-in PRM (a 2-layer token-classification model)
Same policy (the built-in task's), 8 prompts x 8 completions a step, every completion exactly
``--length`` tokens (rollout.min_new_tokens), one minibatch, no reference model (algo.kl_coef 0), fp32, 2 threads;
the rest the paper's defaults read by the one-config route (min-form credit here, as when first measured).
Prints the median step time of each arm (TRL's own ``step_time``, first step dropped), the ratios to
``trl``, and PURE's pipeline and PRM time per step. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

ARMS = ("trl", "pure-rule", "pure")


def one_run(arm: str, steps: int, length: int) -> dict:
    """Runs in a child process: the arm's trainer for ``steps`` steps; its per-step timings."""
    import tempfile

    from trl import GRPOTrainer

    from purerl.integrations.trl import build_trainer, grpo_config, load_route_config

    overrides = [f"run.out_dir={tempfile.mkdtemp()}", f"run.steps={steps}", "run.threads=2", "run.tensorboard=false",
                 f"run.checkpoint_every={steps + 1}", "rollout.prompts_per_step=8", "rollout.k=8",
                 f"rollout.max_new_tokens={length}", f"rollout.min_new_tokens={length}",  # fixed work per step
                 "algo.minibatches=1", "algo.kl_coef=0", "algo.mode=min", "policy.device=cpu",
                 f"prm.kind={'rule' if arm == 'pure-rule' else 'token_classification'}"]  # fmt: skip
    cfg, trl = load_route_config(None, overrides)
    # plain TRL reads none of PURE's settings; the model, rows, reward and batch are the same
    trainer = build_trainer(cfg, grpo_config(cfg, trl), trainer_class=GRPOTrainer if arm == "trl" else None)
    trainer.train()
    rows = [r for r in trainer.state.log_history if "step_time" in r]
    return {
        "step_time": [r["step_time"] for r in rows],
        "pure": [r.get("pure/time/pure") for r in rows],
        "prm": [r.get("pure/time/prm") for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--length", type=int, default=80)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(one_run(args.child, args.steps, args.length)))
        return
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TRL_EXPERIMENTAL_SILENCE": "1"}
    for _ in range(args.repeats):
        for arm in ARMS:
            cmd = [sys.executable, __file__, "--child", arm, "--steps", str(args.steps), "--length", str(args.length)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if out.returncode or line is None:
                raise SystemExit(f"{arm} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            runs[arm].append(json.loads(line[7:]))
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores; 8 prompts x 8, {args.length} tokens each, "
          f"{args.steps} steps a run (first dropped), {args.repeats} runs an arm")  # fmt: skip
    result = {}
    for arm, arm_runs in runs.items():
        steps = [t for r in arm_runs for t in r["step_time"][1:]]
        pure = [t for r in arm_runs for t in r["pure"][1:] if t is not None]
        prm = [t for r in arm_runs for t in r["prm"][1:] if t is not None]
        result[arm] = {"step_s": statistics.median(steps), "pure_s": statistics.median(pure) if pure else None,
                       "prm_s": statistics.median(prm) if prm else None, "steps": len(steps)}  # fmt: skip
    base = result["trl"]["step_s"]
    for arm, r in result.items():
        extra = ""
        if r["pure_s"] is not None:
            extra = f"  pipeline {r['pure_s']:.3f} s, of which PRM {r['prm_s']:.3f} s"
        print(f"{arm:<10} step {r['step_s']:.3f} s  ({r['step_s'] / base:.2f}x trl){extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
