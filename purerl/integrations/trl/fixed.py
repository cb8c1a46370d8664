"""The TRL route's credit for fixed completions, without sampling: what :class:`PureGRPOTrainer` computes
after TRL sampled, on completions and log-probs given by the caller (tests compare it with ``purerl
train``'s pipeline and with the verl route on the same numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from purerl.integrations.trl.data import TaskReward, rows
from purerl.pipeline.rewards import RewardBatch

__all__ = ["fixed_completions_credit"]


def fixed_completions_credit(trainer, problems: Sequence[Any], completion_ids: Sequence[Sequence[int]],
                             old_logprobs: torch.Tensor | None = None,
                             ref_logprobs: torch.Tensor | None = None) -> RewardBatch:  # fmt: skip
    """PURE's credit of ``trainer`` (a :class:`PureGRPOTrainer`) for given completions.

    Args:
        problems: the task's problems, each followed by its K = ``trainer.num_generations`` completions.
        completion_ids: B lists of policy token ids (EOS included where the completion ended).
        old_logprobs, ref_logprobs: (B, T) log-probs of the sampling policy and the reference (T the
            longest completion), needed when the KL penalty goes into the reward.
    Returns:
        The pipeline's record (advantages, returns, kl, steps, rewards), as the trainer hands TRL.
    The rows are the ones the route trains on (:func:`purerl.integrations.trl.data.rows`), the grades come
    through TRL's own reward gathering (``GRPOTrainer._calculate_rewards``), then
    :meth:`PureGRPOTrainer.pure_credit` runs as in training.
    """
    k = trainer.num_generations
    reward = next(f for f in trainer.reward_funcs if isinstance(f, TaskReward))
    tokenizer = trainer.processing_class
    inputs = [row for row in rows(problems, reward, trainer.purerl, tokenizer) for _ in range(k)]
    if len(inputs) != len(completion_ids):
        raise ValueError(f"got {len(completion_ids)} completions for {len(problems)} problems x K = {k}")
    if trainer.kl_in_reward and (old_logprobs is None or ref_logprobs is None):
        raise ValueError("the KL penalty goes into the reward: give old_logprobs and ref_logprobs")
    texts = tokenizer.batch_decode([list(c) for c in completion_ids], skip_special_tokens=True)
    chat = not isinstance(inputs[0]["prompt"], str)
    completions = [[{"role": "assistant", "content": t}] for t in texts] if chat else texts
    prompts = [x["prompt"] for x in inputs]
    trainer._calculate_rewards(inputs, prompts, completions, [list(c) for c in completion_ids])
    device, width = trainer.accelerator.device, max(len(c) for c in completion_ids)
    pad = tokenizer.pad_token_id
    output = {
        "completion_ids": torch.tensor([[*c, *[pad] * (width - len(c))] for c in completion_ids], device=device),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completion_ids], device=device),
    }
    if old_logprobs is not None:
        output["old_per_token_logps"] = old_logprobs.to(device)
    if ref_logprobs is not None:
        output["ref_per_token_logps"] = ref_logprobs.to(device)
    return trainer.pure_credit(inputs, output)
