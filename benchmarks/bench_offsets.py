"""Token offsets of sampled ids: the byte-table path against the window decoding it replaced.

Usage: python benchmarks/bench_offsets.py [--tokenizer DIR] [--rows 64] [--length 128] [--repeats 7]

A random policy's ids (uniform over the vocabulary, EOS at the end) almost never re-encode to
themselves, so ``decode_with_offsets`` cannot keep the tokenizer's own offsets and takes its slow
path. Times, interleaved, the whole ``decode_with_offsets`` call (byte table) and the window decoding
alone on the same ids (two decodes per token, the path every such row took before), and checks on
rows of tokens that are whole characters (so the text is valid UTF-8) that both give the same text
and spans. Default tokenizer: the built-in policy's.
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

    from purerl.steps import _window_offsets, decode_with_offsets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the built-in policy's)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        from purerl.builders import build_policy
        from purerl.config import load_config

        _, tok = build_policy(load_config(None, []))
    rng = random.Random(0)
    special = set(tok.all_special_ids)
    normal = [i for i in range(len(tok)) if i not in special]
    rows = [[rng.choice(normal) for _ in range(args.length)] + [tok.eos_token_id] for _ in range(args.rows)]
    clean = [i for i in normal if "\ufffd" not in tok.decode([i])]  # tokens that are whole characters
    checked = [[rng.choice(clean) for _ in range(args.length)] for _ in range(args.rows)]
    texts, spans = decode_with_offsets(tok, checked)
    window = _window_offsets(tok, checked, 6)
    same = sum(s == w and t == wt for s, (wt, w), t in zip(spans, window, texts))
    valid = len(checked)
    times = {"table": [], "window": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode_with_offsets(tok, rows)
        times["table"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _window_offsets(tok, [r[:-1] for r in rows], 6)
        times["window"].append(time.perf_counter() - start)
    info = machine()
    table, win = median(times["table"]), median(times["window"])
    print(f"machine: {info['cpu']}, {info['cores']} cores; {args.rows} x {args.length} random ids, vocabulary "
          f"{len(tok)}; median of {args.repeats}, interleaved")  # fmt: skip
    print(f"decode_with_offsets (byte table): {table * 1e3:.1f} ms; window decoding alone: {win * 1e3:.1f} ms "
          f"({win / table:.1f}x); equal texts and spans on {same}/{valid} rows of whole-character tokens")  # fmt: skip


if __name__ == "__main__":
    main()
