"""Train a token-classification PRM in PURE's two stages: the head alone, then all weights.

Labels sit at each step's separator token (1 = the step is correct, 0 = wrong). Where an example
also says at which character each step stops being a prefix of a correct solution, every token of
the step is labelled too ("still a prefix of a correct step"): a tiny PRM trained from scratch
learns far faster with these dense labels (DESIGN section 6). Other positions are ignored (-100).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from purerl.config import PRMStagesConfig
from purerl.models.warmstart import cosine_schedule, pad_batch
from purerl.prm.token_classification import build_prm_inputs

# prompt, steps, step labels, and optionally the first bad character of each step (None: correct)
Example = tuple[str, list[str], list[bool], list[int | None] | None]


def _batch(tokenizer, examples: list[Example], separator: str, dense: bool = True):
    seqs, label_rows = [], []
    for prompt, steps, labels, bad_chars in examples:
        ids, markers, step_tokens = build_prm_inputs(tokenizer, prompt, steps, separator)
        row = [-100] * len(ids)
        for k, (m, ok) in enumerate(zip(markers, labels)):
            row[m] = int(ok)
            if dense and bad_chars is not None:
                for pos, char_end in step_tokens[k]:
                    row[pos] = int(bad_chars[k] is None or char_end <= bad_chars[k])
        seqs.append(ids)
        label_rows.append(row)
    ids, mask = pad_batch(seqs, tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, row in enumerate(label_rows):
        labels[i, : len(row)] = torch.tensor(row)
    return ids, mask, labels


def head_module(model) -> tuple[str, torch.nn.Module]:
    """The attribute name and module of a token-classification model's head (``score`` or ``classifier``)."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name, getattr(model, name)
    raise ValueError(f"{type(model).__name__} has no `score` or `classifier` head")


def train_prm(
    model,
    tokenizer,
    sample_example: Callable[[random.Random], Example],
    cfg: PRMStagesConfig,
    separator: str = "\n",
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` on examples drawn by ``sample_example(rng)``; returns the loss of every step."""
    rng = random.Random(cfg.seed)
    losses = []
    model.train()
    for stage, steps, params, lr in (
        ("head", cfg.head_steps, list(head_module(model)[1].parameters()), cfg.head_lr),
        ("full", cfg.full_steps, list(model.parameters()), cfg.lr),
    ):
        if steps <= 0:
            continue
        for p in model.parameters():
            p.requires_grad_(stage == "full")
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        scheduler = cosine_schedule(optimizer, steps)
        for _ in range(steps):
            examples = [sample_example(rng) for _ in range(cfg.batch_size)]
            ids, mask, labels = _batch(tokenizer, examples, separator, cfg.dense_labels)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if on_step:
                on_step(len(losses), losses[-1])
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


@torch.no_grad()
def step_accuracy(prm, examples: list[Example]) -> dict[str, float]:
    """Accuracy of ``score > 0`` against the labels, overall and on wrong steps (recall of errors)."""
    scores = prm.score([e[0] for e in examples], [e[1] for e in examples])
    right = total = caught = wrong = 0
    for row, (_, _, labels, _) in zip(scores, examples):
        for s, ok in zip(row, labels):
            total += 1
            right += (s > 0) == ok
            if not ok:
                wrong += 1
                caught += s <= 0
    return {"step_accuracy": right / max(1, total), "error_recall": caught / max(1, wrong)}
