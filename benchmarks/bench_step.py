"""Where the time of a purerl training step goes: phases, model FLOPs, share of peak, peak memory.

Usage: python benchmarks/bench_step.py [--setup large|small|builtin] [--steps 6] [--json out.json]
       [--peer ../shared/peers/trl_grpo_baseline.py] [--work DIR] [--override key=value ...]

Setups: ``large`` and ``small`` are bench_vs_trl.py's work (the TRL peer's tiny Qwen2, 8 prompts x 8,
fixed-length completions of 128 / 32 tokens, verifiable rewards only, one epoch of one minibatch);
``builtin`` is ``purerl train``'s default job (the built-in policy and PRM, soft-min credit with
PRM+VR, KL in the reward, two minibatches), so the PRM phase is measured too.

Runs ``--steps`` steps in this process (2 threads) and reports, per phase (the trainer's own timers,
plus metrics, monitors and logging, timed here), the median seconds, its share of the step, the
model FLOPs it ran (counted from the shapes of every forward call of the policy and the PRM: weight
matmuls, LM / score head and attention, backward = 2x forward) and the share of the measured fp32
matmul peak that gives, and the peak resident memory inside the phase (``VmHWM``, reset before each
phase). The first step and a step that evaluates (the last) are dropped. Each figure is a median over
steps (so the phases need not add up to the step exactly); "other" is the loop's time outside every
timed phase. "Outside model compute" is the step minus generation, the
policy's forward / backward passes and the PRM's forward.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_trl import DEFAULT_PEER, SIZES, build_work, run_overrides, work_overrides
from common import machine, matmul_peak, median, require_idle, transformer_flops, write_json

MODEL_PHASES = ("rollout", "logprobs", "update", "reward")


def peak_rss_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


class FlopCounter:
    """Forward FLOPs of every call of ``model``, credited to the phase running at the time."""

    def __init__(self, model, phase_of):
        self.config, self.phase_of, self.flops = model.config, phase_of, {}
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        b, n = ids.shape
        total = mask.shape[-1] if mask is not None and mask.dim() == 2 else n
        flops = transformer_flops(self.config, b * n, context=total - n / 2)
        if module.training and torch.is_grad_enabled():
            flops *= 3  # backward: twice the forward
        phase = self.phase_of()
        self.flops[phase] = self.flops.get(phase, 0.0) + flops


def instrument(trainer, times: dict, memory: dict) -> None:
    """Time the loop's untimed parts (metrics, monitors, logging) and record each phase's peak memory."""
    from contextlib import contextmanager

    original = type(trainer).timed.__get__(trainer)

    @contextmanager
    def timed(phase):
        peak_rss_reset()
        with original(phase):
            yield
        memory.setdefault(phase, []).append(peak_rss_mb())

    trainer.timed = timed

    def wrap(obj, name, label):
        fn = getattr(obj, name)

        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] = times.get(label, 0.0) + time.perf_counter() - start

        setattr(obj, name, timed_call)

    wrap(trainer, "metrics", "metrics")
    wrap(type(trainer.monitor), "update", "monitors")  # on the class: the monitor itself goes into checkpoints
    wrap(trainer.logger, "log_step", "logging")
    wrap(trainer.logger, "log_samples", "logging")


def run(args) -> dict:
    from purerl.config import load_config
    from purerl.training.trainer import Trainer

    torch.set_num_threads(2)
    work = None
    if args.setup != "builtin":
        folder = Path(args.work or tempfile.mkdtemp())
        folder.mkdir(parents=True, exist_ok=True)
        model, prompts = build_work(args.peer, args.setup, folder)
        work = {"model": model, "prompts": prompts}
    overrides = run_overrides(tempfile.mkdtemp(), args.steps)
    if work is not None:
        overrides += work_overrides(work["model"], work["prompts"], SIZES[args.setup]["length"])
    trainer = Trainer(load_config(None, overrides + list(args.override)))
    counters = [FlopCounter(trainer.policy, lambda: trainer.phase)]
    if trainer.prm is not None and hasattr(trainer.prm, "model"):
        counters.append(FlopCounter(trainer.prm.model, lambda: "reward"))
    extra: dict[str, float] = {}
    memory: dict[str, list] = {}
    instrument(trainer, extra, memory)
    rows, stamps = [], []
    log_step = trainer.logger.log_step

    def stamped(step, metrics):
        row = log_step(step, metrics)
        rows.append({**{f"time/{k}": v for k, v in extra.items()}, **metrics,
                     "flops": {k: v for c in counters for k, v in c.flops.items()}})  # fmt: skip
        extra.clear()
        for c in counters:
            c.flops = {}
        stamps.append(time.perf_counter())
        return row

    trainer.logger.log_step = stamped
    stamps.append(time.perf_counter())
    trainer.train()
    for row, a, b in zip(rows, stamps, stamps[1:]):
        row["time/loop"] = b - a
    timed = [r for r in rows[1:] if not any(k.startswith("eval/") for k in r)]  # the last step also evaluates
    return summarize(timed, memory, trainer)


def summarize(rows: list[dict], memory: dict, trainer) -> dict:
    peak = matmul_peak(2)
    phases = ["rollout", "segment", "reward", "logprobs", "credit", "update", "metrics", "monitors", "logging"]
    loop = median([r["time/loop"] for r in rows])
    table = {}
    for phase in phases:
        seconds = median([r.get(f"time/{phase}", 0.0) for r in rows])
        flops = median([r["flops"].get(phase, 0.0) for r in rows])
        table[phase] = {"seconds": seconds, "share": seconds / loop, "gflop": flops / 1e9,
                        "peak_share": flops / seconds / peak if seconds and flops else None,
                        "peak_rss_mb": median(memory.get(phase, [])[1:])}  # fmt: skip
    other = median([r["time/loop"] - sum(r.get(f"time/{p}", 0.0) for p in phases) for r in rows])
    table["other"] = {"seconds": other, "share": other / loop, "gflop": 0.0, "peak_share": None, "peak_rss_mb": None}
    model_phases = [p for p in MODEL_PHASES if table[p]["gflop"]]
    outside = median([1 - sum(r.get(f"time/{p}", 0.0) for p in model_phases) / r["time/loop"] for r in rows])
    total_flops = sum(t["gflop"] for t in table.values()) * 1e9
    return {"step_seconds": loop, "phases": table, "outside_model_share": outside,
            "step_peak_share": total_flops / loop / peak, "matmul_peak_gflops": peak / 1e9,
            "tokens_per_second": median([r.get("perf/tokens_per_second") for r in rows]),
            "policy_parameters": sum(p.numel() for p in trainer.policy.parameters()), "steps": len(rows)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=["large", "small", "builtin"], default="large")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--work", help="folder for the peer's model and prompts (default: a temporary one)")
    parser.add_argument("--override", nargs="*", default=[], help="more key=value config overrides")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    busy = require_idle()
    result = run(args)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, 2 threads; setup {args.setup}; "
          f"median of {result['steps']} steps (first dropped); fp32 matmul peak "
          f"{result['matmul_peak_gflops']:.0f} GFLOP/s")  # fmt: skip
    print(f"{'phase':<10} {'seconds':>8} {'share':>6} {'GFLOP':>8} {'of peak':>8} {'peak RSS MB':>11}")
    for phase, t in result["phases"].items():
        of_peak = f"{t['peak_share']:.0%}" if t["peak_share"] else "-"
        rss = f"{t['peak_rss_mb']:.0f}" if t["peak_rss_mb"] else "-"
        print(f"{phase:<10} {t['seconds']:>8.3f} {t['share']:>6.1%} {t['gflop']:>8.1f} {of_peak:>8} {rss:>11}")
    print(f"step {result['step_seconds']:.3f} s; outside model compute {result['outside_model_share']:.1%}; "
          f"whole step at {result['step_peak_share']:.0%} of peak; {result['tokens_per_second']:.0f} response "
          f"tokens/s")  # fmt: skip
    write_json(args.json, {"machine": info, "idle_check_busy": busy, "setup": args.setup, **result})


if __name__ == "__main__":
    main()
