"""PRM scoring throughput against a plain batched forward of the same PRM on the same tokens (CPU).

Usage: python benchmarks/bench_prm.py [--batches 4] [--repeats 5] [--json out.json] [--override key=value ...]

The responses are real: ``purerl train``'s default job samples ``--batches`` batches (16 prompts x 8)
from the built-in policy and splits them into steps, as a training step does. Then, interleaved and
``--repeats`` times each, on 2 threads:

  score      ``prm.score(prompts, steps)``: what a training step calls (building the PRM's inputs,
             length-bucketed forward passes, reading each step's score);
  forward    the model alone on the same token ids, padded into one batch (one forward call);
  bucketed   the model alone on the same ids in ``score``'s length buckets (no input building);
  inputs     building the PRM's inputs alone, every prompt and step in one tokenizer call (``score``'s);
  inputs_by_piece  the same, one tokenizer call per prompt and per step (``score`` before).

Prints tokens per second of each (real tokens, padding not counted) and the ratios to ``forward``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, require_idle, write_json


def sampled_batches(n: int, overrides: list[str]):
    """``n`` batches of (prompts, steps) from the default job's policy, and the trainer (its PRM)."""
    from purerl.config import load_config
    from purerl.training.trainer import Trainer

    cfg = load_config(None, [f"run.out_dir={tempfile.mkdtemp()}", "run.threads=2", "run.tensorboard=false",
                             *overrides])  # fmt: skip
    trainer = Trainer(cfg)
    batches = []
    for _ in range(n):
        batch = trainer.next_batch()
        trainer.sample(batch)
        trainer.segment(batch)
        batches.append((batch.prompts, batch.steps.steps))
    return batches, trainer.prm


def main() -> None:
    import torch

    from purerl.prm.batching import bucketed_scores
    from purerl.prm.token_classification import batch_prm_inputs, build_prm_inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--override", nargs="*", default=[], help="key=value config overrides (the PRM, its size)")
    parser.add_argument("--json")
    args = parser.parse_args()
    busy = require_idle()
    torch.set_num_threads(2)
    batches, prm = sampled_batches(args.batches, args.override)
    items = [[prm.truncation(*build_prm_inputs(prm.tokenizer, p, s, prm.separator)[:2]) for p, s in zip(*b)]
             for b in batches]  # fmt: skip
    pad = prm.tokenizer.pad_token_id
    tokens = sum(len(ids) for batch in items for ids, _ in batch)

    def score():
        for prompts, steps in batches:
            prm.score(prompts, steps)

    def forward():
        for batch in items:
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (seq, _) in enumerate(batch):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            with torch.no_grad():
                prm.model(input_ids=ids, attention_mask=mask)

    def bucketed():
        for batch in items:
            bucketed_scores(prm.model, batch, pad, prm.batch_tokens, lambda logits: logits[..., 0])

    def inputs():
        for prompts, steps in batches:
            batch_prm_inputs(prm.tokenizer, prompts, steps, prm.separator)

    def inputs_by_piece():
        for prompts, steps in batches:
            for p, s in zip(prompts, steps):
                build_prm_inputs(prm.tokenizer, p, s, prm.separator)

    arms = {"score": score, "forward": forward, "bucketed": bucketed, "inputs": inputs,
            "inputs_by_piece": inputs_by_piece}  # fmt: skip
    times = {name: [] for name in arms}
    for fn in arms.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: {"seconds": median(t), "tokens_per_second": tokens / median(t)} for name, t in times.items()}
    info = machine()
    responses = sum(len(b[0]) for b in batches)
    steps = sum(len(s) for b in batches for s in b[1])
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, 2 threads; {responses} responses, "
          f"{steps} steps, {tokens} PRM tokens; median of {args.repeats}, interleaved")  # fmt: skip
    print(f"{'arm':<16} {'seconds':>8} {'tokens/s':>9} {'x forward':>9}")
    for name, r in result.items():
        ratio = r["seconds"] / result["forward"]["seconds"]
        print(f"{name:<16} {r['seconds']:>8.3f} {r['tokens_per_second']:>9.0f} {ratio:>9.2f}")
    write_json(args.json, {"machine": info, "idle_check_busy": busy, "responses": responses, "steps": steps,
                           "tokens": tokens, "arms": result, "times": times})  # fmt: skip


if __name__ == "__main__":
    main()
