"""purerl.algo.losses: PPO-clip by hand, aggregation modes, log-probs and entropy from logits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from purerl.algo.losses import aggregate_loss, entropy_from_logits, logprobs_from_logits, ppo_clip_loss


def test_ppo_clip_by_hand():
    # Four tokens, eps = 0.2. ratio = exp(new - old):
    #   t0: ratio 1.5,  A = +1 -> min(1.5, 1.2) = 1.2      (clipped)  -> loss -1.2
    #   t1: ratio 0.5,  A = +1 -> min(0.5, 0.8) = 0.5      (not)      -> loss -0.5
    #   t2: ratio 0.5,  A = -1 -> min(-0.5, -0.8) = -0.8   (clipped)  -> loss 0.8
    #   t3: ratio 1.1,  A = -2 -> min(-2.2, -2.2) = -2.2   (inside)   -> loss 2.2
    # token_mean = (-1.2 - 0.5 + 0.8 + 2.2) / 4 = 0.325; clip_frac = 2/4.
    old = torch.zeros(1, 5, dtype=torch.float64)
    new = torch.tensor([[math.log(1.5), math.log(0.5), math.log(0.5), math.log(1.1), 3.0]], dtype=torch.float64)
    new.requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -2.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, metrics = ppo_clip_loss(new, old, adv, mask, clip_ratio=0.2)
    assert loss.item() == pytest.approx(0.325)
    assert metrics["clip_frac"].item() == pytest.approx(0.5)
    expected_kl = -(math.log(1.5) + 2 * math.log(0.5) + math.log(1.1)) / 4
    assert metrics["approx_kl"].item() == pytest.approx(expected_kl)
    loss.backward()
    # Clipped tokens and the masked token get no gradient; the others get -A * ratio / 4.
    assert_close(new.grad, torch.tensor([[0.0, -0.5 / 4, 0.0, 2.2 / 4, 0.0]], dtype=torch.float64))


def test_clip_higher_widens_the_upper_side():
    old = torch.zeros(1, 1)
    new = torch.tensor([[math.log(1.25)]])
    loss, metrics = ppo_clip_loss(new, old, torch.ones(1, 1), torch.ones(1, 1), clip_ratio=0.2, clip_ratio_high=0.28)
    assert loss.item() == pytest.approx(-1.25) and metrics["clip_frac"].item() == 0.0


def test_aggregations_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate_loss(loss, mask, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate_loss(loss, mask, "seq_mean_token_sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate_loss(loss, mask, "seq_mean_token_mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate_loss(loss, mask, "seq_mean_token_sum_norm", max_len=10).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(loss, mask, "mean")


def test_logprobs_and_entropy_match_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 11, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 4), generator=gen)
    dist = torch.distributions.Categorical(logits=logits)
    assert_close(logprobs_from_logits(logits, labels), dist.log_prob(labels))
    assert_close(entropy_from_logits(logits), dist.entropy())
    uniform = torch.zeros(1, 1, 8)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(8))
    masked = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    assert entropy_from_logits(masked).item() == pytest.approx(math.log(2))
