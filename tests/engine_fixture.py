"""Fixed completions for comparing engines (not a test itself): 2 problems of the built-in task x 4
hand-written completions, their policy token ids, and fixed sampling-policy and reference log-probs.

Every engine route (``purerl train``'s pipeline, TRL, verl) is fed these same numbers with the same
config, ``configs/engines/builtin.yaml``, and must give the same advantages. Engine-free on purpose: it
imports only purerl and torch, so the verl environment can use it too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from purerl.tasks.arithmetic import Problem

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "engines" / "builtin.yaml"
"""The one config every route reads: the built-in task and PRM, prm+vr with ``algo.vr_fraction: 0.5``, the
paper's default credit (soft-min T = 0.1, whitening, KL 1e-3 k3 in the reward), K = 4."""

K = 4

PROBLEMS = (
    Problem(7, (("+", 3), ("-", 2), ("+", 1))),  # "vr:" + its prompt hashes outside the 0.5 share: no VR
    Problem(2, (("+", 2), ("+", 3))),  # inside the 0.5 share: verifiable rewards
)
"""The two problems; each has K completions below, in this order."""

COMPLETIONS = (
    # problem 0: right; a wrong result carried on; right with a filler step; no step worth the name
    ("7+3=0 (0-2+1)\n\n0-2=8 (8+1)\n\n8+1=9\n\nThe answer is \\boxed{9}.", True),
    ("7+3=0 (0-2+1)\n\n0-2=2 (2+1)\n\n2+1=3\n\nThe answer is \\boxed{3}.", True),
    ("7+3=0 (0-2+1)\n\nLet me check the last step.\n\n0-2=8 (8+1)\n\n8+1=9\n\nThe answer is \\boxed{9}.", True),
    ("Thank you.", True),
    # problem 1: right; a wrong last operation; an empty answer; cut off at the length cap (no EOS)
    ("2+2=4 (4+3)\n\n4+3=7\n\nThe answer is \\boxed{7}.", True),
    ("2+2=4 (4+3)\n\n4+3=8\n\nThe answer is \\boxed{8}.", True),
    ("", True),
    ("2+2=4 (4+3)\n\n4+3=7\n\nThe ans", False),
)
"""``(text, ends with EOS)`` of each completion, K per problem in the order of :data:`PROBLEMS`."""


def prompts() -> list[str]:
    """The problems' prompts as the PRM reads them, one per completion (K copies each)."""
    return [p.prompt for p in PROBLEMS for _ in range(K)]


def completion_ids(tokenizer) -> list[list[int]]:
    """Each completion tokenized with the policy tokenizer (no special tokens), EOS appended where it ended."""
    out = []
    for text, ended in COMPLETIONS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        out.append([*ids, tokenizer.eos_token_id] if ended else ids)
    return out


def response_mask(ids: list[list[int]]) -> torch.Tensor:
    """(B, T) float, 1 on each completion's tokens, T the longest completion."""
    width = max(len(row) for row in ids)
    return torch.tensor([[1.0] * len(row) + [0.0] * (width - len(row)) for row in ids])


def logprobs(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed ``(old, ref)`` log-probs (B, T): the sampling policy's in [-2, 0), the reference's about 0.3
    away from them, so that the KL penalty is far from zero; 0 outside the completions."""
    mask = response_mask(ids)
    gen = torch.Generator().manual_seed(1234)
    old = -2.0 * torch.rand(mask.shape, generator=gen) - 1e-3
    ref = old + 0.3 * torch.randn(mask.shape, generator=gen)
    return old * mask, ref.clamp(max=0.0) * mask


def truncated() -> torch.Tensor:
    """(B,) True where a completion did not end with EOS."""
    return torch.tensor([not ended for _, ended in COMPLETIONS])


def group_ids() -> torch.Tensor:
    """(B,) the problem of each completion."""
    return torch.arange(len(PROBLEMS)).repeat_interleave(K)


def purerl_train_credit(cfg, tokenizer, ids: list[list[int]]):
    """What ``purerl train``'s pipeline gives the fixed completions under ``cfg`` (the calls of
    purerl.training.trainer): the :class:`purerl.pipeline.rewards.RewardBatch` with its advantages."""
    from purerl.config import task_name
    from purerl.pipeline import rewards as pipeline
    from purerl.pipeline.advantages import CreditSettings
    from purerl.prm.loading import load_prm
    from purerl.registry import TASKS

    task = TASKS.resolve(task_name(cfg)).from_config(cfg)
    problems, a = [p for p in PROBLEMS for _ in range(K)], cfg.algo
    has_truth = pipeline.vr_prompts(prompts(), a.reward, a.vr_fraction, [task.has_reward_answer(p) for p in problems])
    batch = pipeline.process_rewards(
        prompts(), ids, tokenizer, group_ids=group_ids(), response_mask=response_mask(ids), truncated=truncated(),
        separator=task.separator, prm=load_prm(cfg.prm, task, builtin=cfg),
        grader=lambda i, text: task.grade(text, problems[i]), has_truth=has_truth,
    )  # fmt: skip
    batch.logprobs, batch.ref_logprobs = logprobs(ids)
    pipeline.assign_credit(batch, CreditSettings.from_algo(cfg.algo, cfg.rollout.max_new_tokens))
    return batch
