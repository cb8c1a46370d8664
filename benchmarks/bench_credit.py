"""Time the credit math and step segmentation at PURE's batch sizes (CPU by default).

Usage: python benchmarks/bench_credit.py [--device cuda] [--repeats 20]
Prints the median wall time of each phase; nothing here is a test.
"""

from __future__ import annotations

import argparse
import functools
import platform
import random
import statistics
import time

import torch

from purerl.algo.credit import pure_advantages
from purerl.algo.kl import kl_penalty
from purerl.models.tokenization import train_bpe_tokenizer
from purerl.pipeline.steps import decode_with_offsets, segment_batch


def synthetic_batch(prompts: int, k: int, steps: int, tokens: int, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    b = prompts * k
    lengths = torch.randint(tokens // 4, tokens + 1, (b,), generator=gen)
    n_steps = torch.minimum(torch.randint(1, steps + 1, (b,), generator=gen), lengths)
    step_mask = torch.arange(steps)[None, :] < n_steps[:, None]
    # evenly spaced step ends, the last one on the response's last token
    frac = (torch.arange(1, steps + 1)[None, :].float() / n_steps[:, None].float()).clamp(max=1.0)
    step_ends = torch.where(step_mask, (frac * lengths[:, None]).long() - 1, 0)
    response_mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float()
    step_rewards = torch.rand(b, steps, generator=gen) * 2 - 1
    group_ids = torch.arange(prompts).repeat_interleave(k)[torch.randperm(b, generator=gen)]
    vr = (torch.rand(b, generator=gen) < 0.5).float()
    logp = -torch.rand(b, tokens, generator=gen)
    tensors = step_rewards, step_mask, step_ends, response_mask, group_ids, vr, logp
    return [t.to(device) for t in tensors]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {args.device}"
    )
    for prompts, k, steps, tokens in [(16, 8, 16, 256), (128, 8, 40, 2048)]:
        *batch, logp = synthetic_batch(prompts, k, steps, tokens, args.device)
        penalty = -1e-3 * kl_penalty(logp, logp * 0.9)
        for mode in ("soft_min", "min", "sum"):
            call = functools.partial(pure_advantages, *batch, mode=mode, token_penalty=penalty)
            seconds = median_seconds(call, args.repeats)
            print(f"pure_advantages  B={prompts * k:5d} S={steps:3d} T={tokens:5d} {mode:<9} {seconds * 1e3:8.2f} ms")

    rng = random.Random(0)
    texts = []
    for _ in range(128):
        total, parts = rng.randint(1, 99), []
        for _ in range(rng.randint(2, 12)):
            b = rng.randint(1, 99)
            parts.append(f"Add {b} to {total}: {total}+{b}={total + b}.")
            total += b
        texts.append("\n\n".join(parts) + f"\n\nThe answer is \\boxed{{{total}}}.")
    tok = train_bpe_tokenizer(texts * 4, vocab_size=400)
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    seconds = median_seconds(lambda: segment_batch(*decode_with_offsets(tok, ids)), max(3, args.repeats // 4))
    n_tokens = sum(len(i) for i in ids)
    print(f"decode_with_offsets + segment_batch: 128 responses, {n_tokens} tokens: {seconds * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
