"""Supervised warm start of the built-in task's policy, cached on disk by its config.

The policy imitates sampled solutions that contain realistic mistakes and filler steps, so that its
held-out accuracy starts well below its ceiling and RL has something to improve.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from purerl.config import SFTConfig, TinyModelConfig
from purerl.models.loading import cache_key, cached_folder, new_policy, publish, task_tokenizer
from purerl.tasks import arithmetic

log = logging.getLogger(__name__)


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``(ids, attention_mask)``, both (B, L)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def cosine_schedule(optimizer: torch.optim.Optimizer, total: int, warmup_frac: float = 0.05):
    import math

    warmup = max(1, int(total * warmup_frac)) if warmup_frac > 0 else 0  # 0: cosine from the first step

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sample_pair,
    cfg: SFTConfig,
) -> list[float]:
    """Train ``model`` on ``(prompt, response)`` pairs drawn by ``sample_pair(rng)``; loss on responses.

    Returns the loss of every step.
    """
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    scheduler = cosine_schedule(optimizer, cfg.steps)
    model.train()
    losses = []
    for _ in range(cfg.steps):
        prompts, responses = zip(*(sample_pair(rng) for _ in range(cfg.batch_size)))
        p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        seqs = [p + r + [tokenizer.eos_token_id] for p, r in zip(p_ids, r_ids)]
        prompt_lens = [len(p) for p in p_ids]
        ids, mask = pad_batch(seqs, tokenizer.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        for i, n in enumerate(prompt_lens):
            labels[i, :n] = -100
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def warm_start_policy(
    task: arithmetic.ArithmeticConfig, size: TinyModelConfig, cfg: SFTConfig, refresh: bool = False
) -> Path:
    """Folder of the warm-started policy (model + tokenizer), trained once per config and cached."""
    folder, ready = cached_folder(f"policy-{cache_key(task, size, cfg, arithmetic.FORMAT)}", refresh)
    if ready:
        return folder
    start = time.time()
    tokenizer = task_tokenizer(task)
    model = new_policy(tokenizer, size, cfg.seed)

    def sample_pair(rng: random.Random) -> tuple[str, str]:
        p = arithmetic.draw_problem(rng, task)
        steps, _ = arithmetic.sample_solution(p, rng, task)
        return p.prompt, arithmetic.SEPARATOR.join(steps)

    log.info("warm start: %d SFT steps of the built-in policy (cached in %s)", cfg.steps, folder)
    losses = sft(model, tokenizer, sample_pair, cfg)
    meta = {
        "task": asdict(task),
        "size": asdict(size),
        "sft": asdict(cfg),
        "seconds": time.time() - start,
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
    }
    return publish(model, tokenizer, folder, "purerl_warmstart.json", meta, replace=refresh)
