"""What every timing benchmark here shares: the machine's description, an idle-machine check, the CPU
share other processes take during a measurement, the fp32 matmul peak, and model FLOPs.

Timings on a shared 2-core machine are noisy; each benchmark reports medians of interleaved runs and
records how busy the rest of the machine was while it measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time


def proc_stat() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of the whole machine from ``/proc/stat`` (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, sum(values[:8])


class ForeignCPU:
    """Share of all CPU time used by processes other than this one (and its children) between
    :meth:`start` and :meth:`stop` (the measure the TRL peer script records per step)."""

    def start(self) -> None:
        self.stat, self.times = proc_stat(), os.times()

    def stop(self) -> float | None:
        stat, times = proc_stat(), os.times()
        if self.stat is None or stat is None:
            return None
        own = sum(times[:4]) - sum(self.times[:4])
        own_jiffies = own * os.sysconf("SC_CLK_TCK")
        return max(0.0, ((stat[0] - self.stat[0]) - own_jiffies) / max(1, stat[1] - self.stat[1]))


def idle_share(seconds: float = 2.0) -> float | None:
    """Share of the machine's CPU busy while this process sleeps ``seconds`` (0: idle)."""
    meter = ForeignCPU()
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def require_idle(limit: float = 0.05, seconds: float = 2.0) -> float | None:
    """Warn (stderr) when other processes keep more than ``limit`` of the machine busy; returns the share."""
    import sys

    busy = idle_share(seconds)
    if busy is not None and busy > limit:
        print(f"WARNING: other processes use {busy:.0%} of the CPUs; timings will be contaminated", file=sys.stderr)
    return busy


def machine() -> dict:
    """CPU model, cores, Python and library versions."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}  # fmt: skip
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def matmul_peak(threads: int = 2, sizes=(512, 1024, 2048), repeats: int = 10, dtype=None) -> float:
    """Measured matmul throughput in FLOP/s (fp32 unless ``dtype``): the best over square products of
    each of ``sizes``, ``repeats`` each."""
    import torch

    torch.set_num_threads(threads)
    dtype = dtype or torch.float32
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(2):
            a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def transformer_flops(config, tokens: int, context: float = 0.0) -> float:
    """Forward FLOPs of a decoder (2 per multiply-add) for ``tokens`` tokens, each attending to
    ``context`` positions on average: the weight matmuls (LM head included) plus attention scores
    and values. Backward is twice this."""
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    inter = config.intermediate_size
    per_layer = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h + 3 * h * inter
    weights = config.num_hidden_layers * per_layer + h * config.vocab_size
    attention = config.num_hidden_layers * 2 * heads * head_dim * context
    return 2.0 * tokens * (weights + attention)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def write_json(path: str | None, result: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path}")
