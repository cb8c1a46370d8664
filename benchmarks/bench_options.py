"""Speed-ups the libraries offer, measured on the large benchmark model before adopting any (CPU).

Usage: python benchmarks/bench_options.py [--work DIR] [--repeats 3] [--compile] [--json out.json]

Generation (64 prompts of 4 tokens, 128 sampled tokens each, ``min_new_tokens`` as in the step
benchmarks; the TRL peer's hidden-512 / 4-layer Qwen2, 2 threads), interleaved, ``--repeats`` each
after one warm-up call:

  default   transformers ``generate`` as purerl calls it (SDPA attention, dynamic KV cache);
  static    ``cache_implementation="static"`` (a preallocated cache, meant for compilation);
  eager     ``attn_implementation="eager"``;
  bf16      the same model in bfloat16 (this CPU has AVX512-BF16);
  buffer    a dynamic cache whose layers write into preallocated room instead of concatenating
            (an experiment here, not in purerl: same tokens, checked);
  compile   ``torch.compile`` of the forward (``--compile``; its first call, the compilation, is
            reported apart).

The optimizer: one AdamW step over the same model's gradients, foreach (purerl's) against fused,
and the largest difference between the weights after 5 steps (fused is not bit-identical).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_trl import DEFAULT_PEER, build_work
from common import machine, median, require_idle, write_json


def buffered_cache(model, room: int):
    """A DynamicCache whose layers keep spare room and return views (transformers 5's cache layers)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class BufferLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.k = key_states.new_empty((*key_states.shape[:2], room, key_states.shape[-1]))
                self.v = value_states.new_empty((*value_states.shape[:2], room, value_states.shape[-1]))
                self.n = 0
            end = self.n + key_states.shape[-2]
            self.k[:, :, self.n : end], self.v[:, :, self.n : end] = key_states, value_states
            self.n = end
            self.keys, self.values = self.k[:, :, :end], self.v[:, :, :end]
            return self.keys, self.values

    cache = DynamicCache(config=model.config)
    cache.layers = [BufferLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def generation(model_dir: Path, prompts: list[str], repeats: int, compile_: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    length = 128
    kw = dict(max_new_tokens=length, min_new_tokens=length, do_sample=True, temperature=1.0, top_k=None, top_p=None,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    default = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    eager = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    bf16 = AutoModelForCausalLM.from_pretrained(model_dir).to(torch.bfloat16).eval()
    room = enc["input_ids"].shape[1] + length
    arms = {
        "default": lambda: default.generate(**enc, **kw),
        "static": lambda: default.generate(**enc, **kw, cache_implementation="static"),
        "eager": lambda: eager.generate(**enc, **kw),
        "bf16": lambda: bf16.generate(**enc, **kw),
        "buffer": lambda: default.generate(**enc, **kw, past_key_values=buffered_cache(default, room)),
    }
    result = {}
    with torch.no_grad():
        torch.manual_seed(1)
        plain = default.generate(**enc, **kw)
        torch.manual_seed(1)
        result["buffer_same_tokens"] = bool(torch.equal(plain, arms["buffer"]()))
        if compile_:
            compiled = AutoModelForCausalLM.from_pretrained(model_dir).eval()
            compiled.forward = torch.compile(compiled.forward, dynamic=True)
            start = time.perf_counter()
            compiled.generate(**enc, **kw)
            result["compile_first_call_s"] = time.perf_counter() - start
            arms["compile"] = lambda: compiled.generate(**enc, **kw)
        times = {name: [] for name in arms}
        for fn in arms.values():
            fn()
        for _ in range(repeats):
            for name, fn in arms.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    result["seconds"] = {name: median(t) for name, t in times.items()}
    result["all_seconds"] = times
    return result


def optimizer(model_dir: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    grads = [[torch.randn_like(p) * 1e-2 for p in model.parameters()] for _ in range(5)]
    out = {}
    weights = {}
    for name, options in (("foreach", {}), ("fused", {"fused": True})):
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **options)
        times = []
        for g in grads:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
        out[f"{name}_step_s"] = median(times[1:])
        weights[name] = params
    out["max_weight_difference"] = max((a - b).abs().max().item() for a, b in zip(weights["foreach"], weights["fused"]))
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the peer's model and prompts (default: a temporary one)")
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    busy = require_idle()
    torch.set_num_threads(2)
    folder = Path(args.work or tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    model_dir, prompts_file = build_work(args.peer, "large", folder)
    import json

    questions = [json.loads(line)["question"] for line in prompts_file.read_text().splitlines()]
    prompts = [q for q in questions[:8] for _ in range(8)]
    gen = generation(model_dir, prompts, args.repeats, args.compile)
    opt = optimizer(model_dir)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, transformers "
          f"{info.get('transformers')}, 2 threads; 64 x 128 sampled tokens; median of {args.repeats}, "
          "interleaved")  # fmt: skip
    base = gen["seconds"]["default"]
    for name, seconds in gen["seconds"].items():
        print(f"generate {name:<8} {seconds:7.3f} s  {seconds / base:5.2f}x default")
    if "compile_first_call_s" in gen:
        print(f"compile: first call (compilation) {gen['compile_first_call_s']:.1f} s")
    print(f"buffer gives the same tokens as default: {gen['buffer_same_tokens']}")
    print(f"AdamW step: foreach {opt['foreach_step_s'] * 1e3:.1f} ms, fused {opt['fused_step_s'] * 1e3:.1f} ms; "
          f"largest weight difference after 5 steps {opt['max_weight_difference']:.2e}")  # fmt: skip
    write_json(args.json, {"machine": info, "idle_check_busy": busy, "generation": gen, "optimizer": opt})


if __name__ == "__main__":
    main()
