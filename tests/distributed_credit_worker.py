"""One process of a real 2-process gloo group computing PURE credit for its half of a batch whose
groups straddle the processes (run by tests/test_distributed_credit.py; not a test itself).

Usage: RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python distributed_credit_worker.py OUT SEED
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist

from purerl.config import AlgoConfig
from purerl.pipeline.rewards import CreditSettings, ProcessGroup, RewardBatch, assign_credit
from purerl.pipeline.steps import StepBatch


def credit(**changes) -> CreditSettings:
    """Credit settings without whitening or KL unless asked (the math alone), built by the one builder."""
    plain = AlgoConfig(mode="min", whiten=False, kl_coef=0.0, kl_in_reward=False)
    max_len = changes.pop("max_len", None)
    base = CreditSettings.from_algo(plain, max_len)
    return dataclasses.replace(base, **changes)


B, K, MAX_S, MAX_T, N = 12, 3, 6, 40, 48
"""12 responses, groups of 3; split 6 + 6 over two processes, so group 1 (rows 3-5) sits on one and
group 2 (rows 6-8) on the other, while with K = 4 below a group straddles them."""


def global_batch(seed: int, k: int = K):
    """A random batch: per response its step rewards, step ends, length, verifiable reward, logprobs."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, MAX_T + 1, (B,), generator=gen)
    n_steps = torch.minimum(torch.randint(0, MAX_S + 1, (B,), generator=gen), lengths)
    rows = []
    for i in range(B):
        n, t = int(n_steps[i]), int(lengths[i])
        ends = sorted(torch.randperm(t - 1, generator=gen)[: max(n - 1, 0)].tolist()) + ([t - 1] if n else [])
        rows.append({
            "rewards": (torch.rand(n, generator=gen) * 2 - 1).tolist(), "ends": ends, "length": t,
            "vr": [1.0, 0.0, float("nan")][int(torch.randint(0, 3, (1,), generator=gen))],
            "logprobs": (-torch.rand(t, generator=gen)).tolist(), "ref": (-torch.rand(t, generator=gen)).tolist(),
        })  # fmt: skip
    return rows, torch.arange(B) // k


def as_batch(rows, group_ids) -> RewardBatch:
    """The rows as a pipeline record, padded to the widest of *these* rows (as each process pads its own)."""
    s = max([1] + [len(r["rewards"]) for r in rows])
    t = max(r["length"] for r in rows)
    rewards, mask, ends = (
        torch.zeros(len(rows), s),
        torch.zeros(len(rows), s, dtype=torch.bool),
        torch.zeros(len(rows), s, dtype=torch.long),
    )
    response_mask, logprobs, ref = torch.zeros(len(rows), t), torch.zeros(len(rows), t), torch.zeros(len(rows), t)
    for i, r in enumerate(rows):
        n = len(r["rewards"])
        rewards[i, :n], mask[i, :n], ends[i, :n] = (
            torch.tensor(r["rewards"]),
            True,
            torch.tensor(r["ends"], dtype=torch.long),
        )
        response_mask[i, : r["length"]] = 1
        logprobs[i, : r["length"]], ref[i, : r["length"]] = torch.tensor(r["logprobs"]), torch.tensor(r["ref"])
    steps = StepBatch(
        steps=[["s"] * len(r["rewards"]) for r in rows], spans=[[] for _ in rows], step_ends=ends, step_mask=mask
    )
    batch = RewardBatch(prompts=["p"] * len(rows), group_ids=group_ids, response_mask=response_mask, steps=steps)
    batch.step_rewards, batch.scored_mask = rewards, mask
    batch.verifiable_rewards = torch.tensor([r["vr"] for r in rows])
    batch.logprobs, batch.ref_logprobs = logprobs, ref
    return batch


SETTINGS = {
    "soft_min": credit(mode="soft_min", max_len=N, vr_coef=0.5, kl_coef=0.1, kl_in_reward=True),
    "min": credit(mode="min", vr_coef=1.0),
    "sum": credit(mode="sum", max_len=N, kl_coef=0.05, kl_in_reward=True),
    "paper": credit(mode="soft_min", max_len=N, kl_coef=1e-3, kl_in_reward=True, whiten=True),
    "min-whiten": credit(mode="min", vr_coef=1.0, whiten=True),
}
"""The last two whiten the advantages (the paper's default): across processes from the count, sum and
sum of squares of every process's advantages."""


def main() -> None:
    out, seed = sys.argv[1], int(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def all_gather(x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    results = {}
    for k in (K, 4):
        rows, group_ids = global_batch(seed, k)
        size = B // world
        mine = slice(rank * size, (rank + 1) * size)
        for name, settings in SETTINGS.items():
            batch = as_batch(rows[mine], group_ids[mine])
            assign_credit(batch, settings, ProcessGroup(all_gather, rank))
            results[f"k{k}-{name}"] = (batch.advantages, batch.returns)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
