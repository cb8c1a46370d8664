"""The process-reward pipeline on hand-made batches: steps, PRM rewards, verifiable rewards and credit
equal what the pure functions give on the same numbers, and nothing is changed behind a caller's back."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from purerl.algo.credit import pure_advantages
from purerl.config import AlgoConfig
from purerl.pipeline import rewards as pipeline
from purerl.pipeline.rewards import CreditSettings, RewardBatch, has_ground_truth, process_rewards
from purerl.prm.rule import RulePRM
from purerl.tasks import arithmetic


def credit(**changes) -> CreditSettings:
    """Credit settings without whitening or KL unless asked (the math alone), built by the one builder."""
    plain = AlgoConfig(mode="min", whiten=False, kl_coef=0.0, kl_in_reward=False)
    max_len = changes.pop("max_len", None)
    base = CreditSettings.from_algo(plain, max_len)
    return dataclasses.replace(base, **changes)


PROBLEMS = [arithmetic.Problem(7, (("+", 3), ("-", 2))), arithmetic.Problem(2, (("+", 2),))]
# K = 2 responses per problem: right, wrong at step 1 (0-2=5), right, and one without steps
RESPONSES = [
    "7+3=0 (0-2)\n\n0-2=8\n\nThe answer is \\boxed{8}.",
    "7+3=0 (0-2)\n\n0-2=5\n\nThe answer is \\boxed{5}.",
    "2+2=4\n\nThe answer is \\boxed{4}.",
    "   ",
]


def _ids(tokenizer) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in RESPONSES]


def _inputs(tokenizer):
    ids = _ids(tokenizer)
    width = max(len(r) for r in ids)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    return ids, mask


def _batch(tokenizer, prm, has_truth=(True, True, False, False)) -> RewardBatch:
    ids, mask = _inputs(tokenizer)
    problems = [p for p in PROBLEMS for _ in range(2)]
    return process_rewards(
        [p.prompt for p in problems], ids, tokenizer, group_ids=torch.tensor([0, 0, 1, 1]), response_mask=mask,
        truncated=torch.zeros(4, dtype=torch.bool), separator="\n\n", prm=prm,
        grader=lambda i, text: arithmetic.grade(text, problems[i]), has_truth=list(has_truth),
    )  # fmt: skip


def test_a_hand_made_batch_gives_the_hand_computed_record(bpe_tokenizer):
    batch = _batch(bpe_tokenizer, RulePRM(arithmetic.rule_checker))
    assert batch.texts[:3] == RESPONSES[:3] and batch.texts[3].strip() == ""
    assert batch.steps.num_steps.tolist() == [3, 3, 2, 0]
    assert batch.correct == [True, False, True, None]
    assert batch.step_scores == [[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0], []]
    assert batch.step_rewards.tolist() == [[1, 1, 1], [1, -1, 1], [1, 1, 0], [0, 0, 0]]
    assert torch.equal(batch.scored_mask, batch.steps.step_mask) and batch.unscored_steps == 0
    vr = batch.verifiable_rewards.tolist()
    assert vr[:2] == [1.0, 0.0] and math.isnan(vr[2]) and math.isnan(vr[3])
    ends = batch.steps.step_ends
    assert ends[0, 2].item() == len(_ids(bpe_tokenizer)[0]) - 1  # the last step ends on EOS

    settings = credit(mode="min", max_len=40, vr_coef=0.5)
    pipeline.assign_credit(batch, settings)
    expected, returns = pure_advantages(
        batch.step_rewards, batch.steps.step_mask, ends, batch.response_mask.float(), batch.group_ids,
        batch.verifiable_rewards, mode="min", max_len=40, vr_coef=0.5,
    )  # fmt: skip
    assert_close(batch.advantages, expected) and assert_close(batch.returns, returns)
    # by hand (PURE Eq. 4): G is the worst step's score up to that step's end, 0 after. Response 0's steps
    # all score 1, so its first step is the worst: G = 1 on step 1's tokens, 0 after. Response 1: G = -1
    # up to the end of its step 2. Baseline of response 0: (1/N) sum_t G of response 1 = -(end + 1) / 40.
    # The VR part of group 0 (1 vs 0, vr_coef 0.5) is +0.5 on every token of response 0.
    n0, first_end, worst_end = int(batch.response_mask[0].sum()), int(ends[0, 0]), int(ends[1, 1])
    assert batch.returns[0, first_end].item() == 1.0 and batch.returns[0, first_end + 1].item() == 0.0
    assert batch.returns[1, worst_end].item() == -1.0 and batch.returns[1, worst_end + 1].item() == 0.0
    baseline_0 = -(worst_end + 1) / 40
    assert batch.advantages[0, 0].item() == pytest.approx(1.0 - baseline_0 + 0.5)
    assert batch.advantages[0, n0 - 1].item() == pytest.approx(0.0 - baseline_0 + 0.5)
    assert batch.kl is None


class _HalfBlindPRM:
    """Scores like the rule PRM but cannot see the last step of a response with 3 steps (NaN), as a PRM
    does for a step cut off at its length limit."""

    score_range = (-1.0, 1.0)

    def score(self, prompts, steps):
        rows = RulePRM(arithmetic.rule_checker).score(prompts, steps)
        return [[*row[:2], float("nan")] if len(row) == 3 else row for row in rows]


def test_unscored_steps_are_a_mask_of_their_own_and_counted(bpe_tokenizer):
    batch = _batch(bpe_tokenizer, _HalfBlindPRM())
    assert batch.steps.step_mask.sum().item() == 8  # every step is still a step
    assert batch.scored_mask.sum().item() == 6 and batch.unscored_steps == 2
    assert batch.step_rewards[0].tolist() == [1.0, 1.0, 0.0]
    pipeline.assign_credit(batch, credit(mode="soft_min"))
    expected, _ = pure_advantages(
        batch.step_rewards, batch.scored_mask, batch.steps.step_ends, batch.response_mask.float(), batch.group_ids,
        batch.verifiable_rewards, mode="soft_min",
    )  # fmt: skip
    assert_close(batch.advantages, expected)
    metrics = pipeline.batch_metrics(batch, credit(mode="soft_min"))
    assert metrics["prm/unscored_steps"] == 2.0
    assert metrics["prm/min_raw"] == pytest.approx((1 - 1 + 1) / 3)  # NaN steps left out; the empty answer too


def test_verifiable_rewards_only_and_kl_in_the_reward(bpe_tokenizer):
    batch = _batch(bpe_tokenizer, None, has_truth=(True, True, True, True))
    assert batch.step_scores is None and not batch.scored_mask.any()
    batch.logprobs = -torch.rand(batch.response_mask.shape, generator=torch.Generator().manual_seed(0))
    batch.ref_logprobs = batch.logprobs - 0.1
    settings = credit(mode="min", kl_coef=0.5, kl_estimator="k1", kl_in_reward=True, process_rewards=False)
    pipeline.assign_credit(batch, settings)
    assert_close(batch.kl, torch.full_like(batch.kl, 0.1))
    # verifiable part: group 0 = [1, 0] -> +-1; group 1 = [1, 0 (no answer)] -> +-1; the KL part: -0.5 * 0.1
    # per token, summed to the end of the response, less its group's baseline
    mask = batch.response_mask.float()
    penalty = -0.5 * batch.kl * mask
    expected, _ = pure_advantages(
        torch.zeros_like(batch.step_rewards), torch.zeros_like(batch.scored_mask), batch.steps.step_ends, mask,
        batch.group_ids, batch.verifiable_rewards, mode="min", token_penalty=penalty,
    )  # fmt: skip
    assert_close(batch.advantages, expected)
    metrics = pipeline.batch_metrics(batch, settings)
    assert "prm/min_raw" not in metrics and metrics["actor/kl"] == pytest.approx(0.1)


def test_errors_name_what_is_missing(bpe_tokenizer):
    ids, mask = _inputs(bpe_tokenizer)
    with pytest.raises(ValueError, match="got 4 responses for 3 prompts"):
        process_rewards(["a", "b", "c"], ids, bpe_tokenizer, group_ids=torch.zeros(3), response_mask=mask,
                        truncated=torch.zeros(4, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ValueError, match="need grades"):
        process_rewards(["a"] * 4, ids, bpe_tokenizer, group_ids=torch.zeros(4), response_mask=mask,
                        truncated=torch.zeros(4, dtype=torch.bool), has_truth=[True] * 4)  # fmt: skip


def test_has_ground_truth_picks_a_stable_share():
    prompts = [f"problem {i}" for i in range(2000)]
    share = sum(has_ground_truth(p, 0.1) for p in prompts) / len(prompts)
    assert 0.08 < share < 0.12
    assert all(has_ground_truth(p, 1.0) for p in prompts) and not any(has_ground_truth(p, 0.0) for p in prompts)


def test_whitening_follows_the_baselines_and_the_verifiable_part(bpe_tokenizer):
    """The authors' adv_norm: whiten the final advantages (process and verifiable parts together) over
    the batch's response tokens."""
    from purerl.algo.stats import masked_whiten

    plain, white = (_batch(bpe_tokenizer, RulePRM(arithmetic.rule_checker)) for _ in range(2))
    pipeline.assign_credit(plain, credit(mode="min", vr_coef=0.5))
    pipeline.assign_credit(white, credit(mode="min", vr_coef=0.5, whiten=True))
    assert_close(white.advantages, masked_whiten(plain.advantages, plain.response_mask))
    kept = white.advantages[white.response_mask.bool()]
    assert abs(kept.mean().item()) < 1e-6 and abs(kept.std().item() - 1) < 1e-4
    assert torch.equal(white.returns, plain.returns)  # returns are not whitened
