"""The ``pure`` advantage estimator for verl, and the step layout it reads.

verl calls a registered estimator with ``token_level_rewards`` (B, T), ``response_mask`` and the group
``index`` (uids) only. PURE's credit also needs each response's step layout (where each step ends, its
PRM score) and its verifiable reward. In the ``pure_sync`` trainer mode the trainer hands the layout
the ``pure`` reward manager measured to the estimator (:func:`step_layout`); the reward loop's own
scalar is then 0, so ``token_level_rewards`` holds only verl's KL penalty (zero without
``algorithm.use_kl_in_reward``), which PURE adds to its token rewards. Used alone, with another reward
manager, the estimator reads every token with a nonzero reward as the end of a step scored by it.

The settings are the purerl config's (``algorithm.pure``, :mod:`purerl.integrations.verl.config`) through
the one builder, :meth:`CreditSettings.from_algo`; the estimator hands credit the narrow record it reads
(:class:`purerl.pipeline.advantages.CreditInputs`) and calls :func:`compute_credit`, as every route does.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from purerl.integrations.verl.config import pure_config
from purerl.pipeline.advantages import CreditInputs, CreditSettings, compute_credit

STEP_REWARDS, STEP_ENDS, VR = "pure_step_rewards", "pure_step_ends", "pure_vr"
"""The keys of ``reward_extra_info`` through which the reward manager passes the layout on."""


@dataclass
class StepLayout:
    """Per response: each step's PRM score (NaN where the PRM could not score it), the index of its last
    token among the response tokens, and the verifiable reward (NaN where the prompt has none)."""

    step_rewards: torch.Tensor
    """(B, S) scores, 0 on padded and unscored steps."""
    step_ends: torch.Tensor
    """(B, S) long."""
    step_mask: torch.Tensor
    """(B, S) bool: real steps."""
    scored_mask: torch.Tensor
    """(B, S) bool: real steps with a score."""
    verifiable_rewards: torch.Tensor | None
    """(B,) or None."""
    max_len: int | None = None
    """N, the run's maximum response length (``data.max_response_length``): verl pads a batch only to
    its longest response, while PURE's baseline divides by N."""


_LAYOUT: contextvars.ContextVar[StepLayout | None] = contextvars.ContextVar("purerl_step_layout", default=None)


@contextlib.contextmanager
def step_layout(layout: StepLayout):
    """Make ``layout`` the one the estimator reads while the block runs."""
    token = _LAYOUT.set(layout)
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def layout_from_infos(infos: Sequence[dict]) -> StepLayout:
    """The layout of a batch from each response's ``reward_extra_info`` (the ``pure`` reward manager's)."""
    rewards = [json.loads(info.get(STEP_REWARDS) or "[]") for info in infos]
    ends = [json.loads(info.get(STEP_ENDS) or "[]") for info in infos]
    width = max([1] + [len(r) for r in rewards])
    step_rewards = torch.zeros(len(infos), width)
    step_ends = torch.zeros(len(infos), width, dtype=torch.long)
    step_mask = torch.zeros(len(infos), width, dtype=torch.bool)
    scored = torch.zeros_like(step_mask)
    for i, (row, row_ends) in enumerate(zip(rewards, ends)):
        if len(row) != len(row_ends):
            raise ValueError(f"response {i}: {len(row)} step rewards for {len(row_ends)} step ends")
        for j, (r, end) in enumerate(zip(row, row_ends)):
            step_ends[i, j], step_mask[i, j] = end, True
            if r is not None:
                step_rewards[i, j], scored[i, j] = r, True
    vr = [info.get(VR) for info in infos]
    has_vr = any(v is not None for v in vr)
    vr_tensor = torch.tensor([float("nan") if v is None else float(v) for v in vr]) if has_vr else None
    return StepLayout(step_rewards, step_ends, step_mask, scored, vr_tensor)


def layout_from_rewards(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> StepLayout:
    """Standalone use: each response token with a nonzero reward ends a step whose score it is."""
    nonzero = (token_level_rewards != 0) & response_mask.bool()
    counts = nonzero.sum(-1)
    width = max(1, int(counts.max().item()) if counts.numel() else 1)
    step_rewards = torch.zeros(token_level_rewards.shape[0], width, dtype=token_level_rewards.dtype)
    step_ends = torch.zeros(token_level_rewards.shape[0], width, dtype=torch.long)
    step_mask = torch.arange(width)[None, :] < counts[:, None].cpu()
    for i in range(token_level_rewards.shape[0]):
        where = nonzero[i].nonzero().flatten().cpu()
        step_ends[i, : len(where)] = where
        step_rewards[i, : len(where)] = token_level_rewards[i, where].cpu()
    return StepLayout(step_rewards, step_ends, step_mask, step_mask.clone(), None)


def group_ids_of(index, batch_size: int) -> torch.Tensor:
    """Integer group ids from verl's uids (one group per prompt); each response alone without them."""
    if index is None:
        return torch.arange(batch_size)
    _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    return torch.as_tensor(inverse, dtype=torch.long)


def credit_inputs(layout: StepLayout, response_mask: torch.Tensor, group_ids: torch.Tensor,
                  token_penalty: torch.Tensor | None, dtype: torch.dtype) -> CreditInputs:  # fmt: skip
    """What credit reads, from the layout the reward manager measured and verl's batch."""
    device, b = response_mask.device, response_mask.shape[0]
    if layout.step_rewards.shape[0] != b:
        raise ValueError(f"the step layout has {layout.step_rewards.shape[0]} responses, verl's batch {b}")
    vr = layout.verifiable_rewards
    return CreditInputs(
        step_rewards=layout.step_rewards.to(device=device, dtype=dtype), scored_mask=layout.scored_mask.to(device),
        step_ends=layout.step_ends.to(device), response_mask=response_mask, group_ids=group_ids.to(device),
        verifiable_rewards=None if vr is None else vr.to(device=device, dtype=dtype), token_penalty=token_penalty,
    )  # fmt: skip


def pure_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None, config=None, **kwargs):
    """verl advantage estimator ``pure``: PURE's credit (:func:`purerl.pipeline.advantages.compute_credit`)
    with the settings of the purerl config under ``algorithm.pure`` (:func:`CreditSettings.from_algo`).

    N is ``data.max_response_length`` (the ``pure_sync`` trainer hands it with the layout); used alone,
    ``rollout.max_new_tokens`` where the purerl config sets it, else the batch's width. Returns
    ``(advantages, returns)``, both (B, T).
    """
    pure = pure_config(config)
    layout = _LAYOUT.get()
    penalty = None
    if layout is None:
        if config is not None and config.get("use_kl_in_reward", False):
            raise ValueError(
                "the pure estimator outside trainer mode pure_sync reads steps off nonzero token rewards, which a "
                "KL penalty in the reward makes of every token: use trainer.v1.trainer_mode=pure_sync (with "
                "reward.reward_manager.name=pure) or actor_rollout_ref.actor.use_kl_loss instead"
            )
        layout = layout_from_rewards(token_level_rewards, response_mask)
    else:
        penalty = token_level_rewards  # the reward loop's scalar is 0 in pure_sync: this is verl's KL penalty
    max_len = layout.max_len
    if max_len is None:
        given = "rollout.max_new_tokens" in pure.given
        max_len = pure.cfg.rollout.max_new_tokens if given else response_mask.shape[-1]
    settings = CreditSettings.from_algo(pure.cfg.algo, max_len)
    group_ids = group_ids_of(index, response_mask.shape[0])
    inputs = credit_inputs(layout, response_mask, group_ids, penalty, token_level_rewards.dtype)
    _, advantages, returns = compute_credit(inputs, settings)
    return advantages, returns
