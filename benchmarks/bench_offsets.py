"""Token offsets of sampled ids: the byte-table path against the window decoding it replaced.

Usage: python benchmarks/bench_offsets.py [--tokenizer DIR] [--rows 64] [--length 128] [--repeats 7]

A random policy's ids (uniform over the vocabulary, EOS at the end) almost never re-encode to
themselves, so ``decode_with_offsets`` cannot keep the tokenizer's own offsets and takes its slow
path. Times, interleaved, the whole ``decode_with_offsets`` call (windows decoded from the byte table)
and the window decoding by the tokenizer alone on the same ids (two tokenizer decodes a token, the
path every such row took before), and checks that both give the same texts and spans. Default
tokenizer: the built-in policy's.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median


def main() -> None:
    from transformers import AutoTokenizer

    from purerl.pipeline.steps import _window_offsets, _windows, decode_with_offsets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the built-in policy's)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from purerl.config import load_config
        from purerl.training.builders import build_policy

        _, tok = build_policy(load_config(None, []))
    rng = random.Random(0)
    special = set(tok.all_special_ids)
    normal = [i for i in range(len(tok)) if i not in special]
    rows = [[rng.choice(normal) for _ in range(args.length)] + [tok.eos_token_id] for _ in range(args.rows)]
    reference = _window_offsets(_windows(tok, [r[:-1] for r in rows], 6), [r[:-1] for r in rows])
    texts, spans = decode_with_offsets(tok, rows)
    same = sum(t == wt and s[:-1] == w for t, s, (wt, w) in zip(texts, spans, reference))
    times = {"table": [], "window": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode_with_offsets(tok, rows)
        times["table"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _window_offsets(_windows(tok, [r[:-1] for r in rows], 6), [r[:-1] for r in rows])
        times["window"].append(time.perf_counter() - start)
    info = machine()
    table, win = median(times["table"]), median(times["window"])
    print(f"machine: {info['cpu']}, {info['cores']} cores; {args.rows} x {args.length} random ids, vocabulary "
          f"{len(tok)}; median of {args.repeats}, interleaved")  # fmt: skip
    print(f"decode_with_offsets (byte table): {table * 1e3:.1f} ms; window decoding alone: {win * 1e3:.1f} ms "
          f"({win / table:.1f}x); equal texts and spans on {same}/{len(rows)} rows")  # fmt: skip


if __name__ == "__main__":
    main()
