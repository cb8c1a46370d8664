"""purerl.algo.credit against hand-computed tables and a plain-loop reference of DESIGN.md section 2."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from purerl.algo import credit, grpo, kl, stats
from purerl.algo.credit import (
    pure_advantages,
    rloo_advantages,
    transform_step_rewards,
)
from purerl.algo.grpo import grpo_advantages
from purerl.algo.kl import kl_penalty
from purerl.algo.stats import masked_mean, masked_var, masked_whiten

# --------------------------------------------------------------------------------------------------
# A 3-step response worked out by hand
# --------------------------------------------------------------------------------------------------
# r = [0.5, -0.2, 0.3], temperature 0.1.
# soft_min (PURE Eq. 5): -r/T = [-5, 2, -3]; minus the max (2): [-7, 0, -5];
#   exp = [e^-7, 1, e^-5] = [0.000911882, 1, 0.006737947], sum 1.007649829;
#   weights = [0.000904953, 0.992408218, 0.006686799];
#   r* = w * r = [0.000452477, -0.198481644, 0.002006040].
# min: the worst step is step 2 (-0.2): r* = [0, -0.2, 0].
# sum: r* = r = [0.5, -0.2, 0.3].
# Tokens: T = 8, step_ends = [2, 4, 7] (steps are tokens 0-2, 3-4, 5-7).
# Return G_t = sum of r* on step ends at or after t:
#   soft_min: t0-2 = 0.000452477 - 0.198481644 + 0.002006040 = -0.196023127,
#             t3-4 = -0.198481644 + 0.002006040 = -0.196475604, t5-7 = 0.002006040
#   min:      t0-4 = -0.2, t5-7 = 0             (PURE Eq. 4: r_w up to the worst step, 0 after)
#   sum:      t0-2 = 0.6, t3-4 = 0.1, t5-7 = 0.3
HAND_R = [0.5, -0.2, 0.3]
HAND_ENDS = [2, 4, 7]
HAND_TRANSFORMED = {
    "soft_min": [0.000452477, -0.198481644, 0.002006040],
    "min": [0.0, -0.2, 0.0],
    "sum": [0.5, -0.2, 0.3],
}
HAND_RETURNS = {
    "soft_min": [-0.196023127] * 3 + [-0.196475604] * 2 + [0.002006040] * 3,
    "min": [-0.2] * 5 + [0.0] * 3,
    "sum": [0.6] * 3 + [0.1] * 2 + [0.3] * 3,
}


def _hand_batch(dtype):
    step_rewards = torch.tensor([HAND_R], dtype=dtype)
    step_mask = torch.ones(1, 3, dtype=torch.bool)
    step_ends = torch.tensor([HAND_ENDS])
    response_mask = torch.ones(1, 8, dtype=dtype)
    return step_rewards, step_mask, step_ends, response_mask


@pytest.mark.parametrize("mode", ["soft_min", "min", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_three_step_table(mode, dtype):
    step_rewards, step_mask, step_ends, response_mask = _hand_batch(dtype)
    star = transform_step_rewards(step_rewards, step_mask, mode=mode, temperature=0.1)
    assert_close(star, torch.tensor([HAND_TRANSFORMED[mode]], dtype=dtype), atol=1e-7, rtol=1e-6)
    # A group of one: baseline 0, so the advantage equals the return.
    adv, ret = pure_advantages(
        step_rewards, step_mask, step_ends, response_mask, torch.tensor([0]), mode=mode, temperature=0.1
    )
    expected = torch.tensor([HAND_RETURNS[mode]], dtype=dtype)
    assert_close(ret, expected, atol=1e-7, rtol=1e-6)
    assert_close(adv, expected, atol=1e-7, rtol=1e-6)
    assert adv.dtype == ret.dtype == dtype


def test_group_table_with_verifiable_rewards():
    # Three responses in the order [A, C, B]; A and B share group 7, C is alone in group 3. N = T = 4.
    # A: steps [0.5, -0.5] ending at tokens 1, 3; min-form r* = [0, -0.5]; G_A = [-0.5] * 4.
    # C: one step 0.3 ending at token 2 (3 tokens); G_C = [0.3, 0.3, 0.3, 0]; alone: baseline 0.
    # B: one step 0.8 ending at token 1 (2 tokens); G_B = [0.8, 0.8, 0, 0].
    # (1/N) sum_t G: A = -2/4 = -0.5, B = 1.6/4 = 0.4. So b_A = 0.4, b_B = -0.5.
    # A^p_A = -0.5 - 0.4 = -0.9 on 4 tokens; A^p_B = 0.8 + 0.5 = 1.3 on its 2 tokens.
    # VR = [1 (A), NaN (C: no ground truth), 0 (B)]: A^v_A = 1 - 0 = 1, A^v_B = 0 - 1 = -1, C none.
    # vr_coef 0.5: A_A = -0.9 + 0.5 = -0.4; A_B = 1.3 - 0.5 = 0.8; A_C = G_C.
    step_rewards = torch.tensor([[0.5, -0.5], [0.3, float("nan")], [0.8, 123.0]], dtype=torch.float64)
    step_mask = torch.tensor([[True, True], [True, False], [True, False]])
    step_ends = torch.tensor([[1, 3], [2, 0], [1, 0]])
    response_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    group_ids = torch.tensor([7, 3, 7])
    vr = torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64)
    adv, ret = pure_advantages(
        step_rewards, step_mask, step_ends, response_mask, group_ids, vr, mode="min", vr_coef=0.5
    )
    assert_close(ret, torch.tensor([[-0.5] * 4, [0.3, 0.3, 0.3, 0.0], [0.8, 0.8, 0.0, 0.0]], dtype=torch.float64))
    assert_close(adv, torch.tensor([[-0.4] * 4, [0.3, 0.3, 0.3, 0.0], [0.8, 0.8, 0.0, 0.0]], dtype=torch.float64))


def test_max_len_normalises_the_baseline():
    # Same group as above without VR, N = 8 instead of 4: b_A = 1.6 / 8 = 0.2, b_B = -2 / 8 = -0.25.
    step_rewards = torch.tensor([[0.5, -0.5], [0.8, 0.0]], dtype=torch.float64)
    step_mask = torch.tensor([[True, True], [True, False]])
    step_ends = torch.tensor([[1, 3], [1, 0]])
    response_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float64)
    adv, _ = pure_advantages(
        step_rewards, step_mask, step_ends, response_mask, torch.tensor([0, 0]), mode="min", max_len=8
    )
    assert_close(adv, torch.tensor([[-0.7] * 4, [1.05, 1.05, 0.0, 0.0]], dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# Plain-loop reference, written straight from DESIGN.md section 2
# --------------------------------------------------------------------------------------------------


def ref_transform(rewards: list[float], mode: str, temperature: float) -> list[float]:
    if not rewards:
        return []
    if mode == "sum":
        return list(rewards)
    if mode == "min":
        worst = rewards.index(min(rewards))  # the first step of minimum reward
        return [r if j == worst else 0.0 for j, r in enumerate(rewards)]
    top = max(-r / temperature for r in rewards)
    exps = [math.exp(-r / temperature - top) for r in rewards]
    return [e / sum(exps) * r for e, r in zip(exps, rewards)]


def ref_pure(batch, mode, temperature, vr_coef, max_len, gamma):
    """Returns (advantages, returns) as nested lists, one response at a time."""
    step_rewards, step_mask, step_ends, response_mask, group_ids, vr, penalty = batch
    b, t = response_mask.shape
    n = t if max_len is None else max_len
    returns = []
    for i in range(b):
        steps = [j for j in range(step_mask.shape[1]) if step_mask[i, j]]
        star = ref_transform([step_rewards[i, j].item() for j in steps], mode, temperature)
        g = [0.0] * t
        for tok in range(t):
            if not response_mask[i, tok]:
                continue
            # discounted sum over the steps not yet finished at this token
            future = [k for k, j in enumerate(steps) if step_ends[i, j].item() >= tok]
            if future:
                first = future[0]
                g[tok] = sum(star[k] * gamma ** (k - first) for k in future)
            if penalty is not None:
                g[tok] += sum(penalty[i, u].item() for u in range(tok, t) if response_mask[i, u])
        returns.append(g)
    advantages = []
    for i in range(b):
        others = [k for k in range(b) if k != i and group_ids[k] == group_ids[i]]
        base = sum(sum(returns[k]) / n for k in others) / len(others) if others else 0.0
        a_v = 0.0
        if vr is not None and not math.isnan(vr[i].item()):
            vr_others = [vr[k].item() for k in others if not math.isnan(vr[k].item())]
            a_v = vr[i].item() - (sum(vr_others) / len(vr_others) if vr_others else 0.0)
        advantages.append(
            [(returns[i][tok] - base + vr_coef * a_v) if response_mask[i, tok] else 0.0 for tok in range(t)]
        )
    return advantages, returns


def random_batch(seed: int, dtype=torch.float64, with_vr=True, with_penalty=True):
    """A batch with shuffled, non-contiguous groups, empty responses, groups of one, garbage padding."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    num_groups, max_k, s, t = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 6), rng.randint(1, 12)
    group_ids, lengths = [], []
    for g in range(num_groups):
        gid = rng.randint(-50, 50) * 10 + g  # arbitrary, distinct ids
        for _ in range(rng.randint(1, max_k)):
            group_ids.append(gid)
            lengths.append(rng.choice([0, rng.randint(1, t)]))
    order = list(range(len(group_ids)))
    rng.shuffle(order)
    group_ids = [group_ids[k] for k in order]
    lengths = [lengths[k] for k in order]
    b = len(group_ids)
    step_rewards = torch.rand(b, s, generator=gen, dtype=dtype) * 2 - 1
    step_mask = torch.zeros(b, s, dtype=torch.bool)
    step_ends = torch.zeros(b, s, dtype=torch.long)
    response_mask = torch.zeros(b, t, dtype=dtype)
    for i, length in enumerate(lengths):
        response_mask[i, :length] = 1
        n_steps = 0 if length == 0 else rng.randint(1, min(s, length))
        ends = [*sorted(rng.sample(range(length - 1), n_steps - 1)), length - 1] if n_steps else []
        step_mask[i, :n_steps] = True
        step_ends[i, :n_steps] = torch.tensor(ends, dtype=torch.long)
        step_rewards[i, n_steps:] = float("nan")  # padding may hold anything
        step_ends[i, n_steps:] = rng.randint(0, t)
    vr = None
    if with_vr:
        per_group = {g: rng.choice([float("nan"), 0.0, 1.0]) for g in set(group_ids)}
        vr = torch.tensor(
            [per_group[g] if math.isnan(per_group[g]) else float(rng.random() < 0.5) for g in group_ids],
            dtype=dtype,
        )
    penalty = torch.randn(b, t, generator=gen, dtype=dtype) * 0.1 if with_penalty else None
    return step_rewards, step_mask, step_ends, response_mask, torch.tensor(group_ids), vr, penalty


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("mode", ["soft_min", "min", "sum"])
def test_vectorised_matches_loop_reference(seed, mode):
    batch = random_batch(seed, with_vr=seed % 3 != 0, with_penalty=seed % 2 == 0)
    step_rewards, step_mask, step_ends, response_mask, group_ids, vr, penalty = batch
    temperature = [0.1, 0.5, 1.0][seed % 3]
    max_len = None if seed % 4 else response_mask.shape[1] + 5
    gamma = 1.0 if seed % 5 else 0.9
    adv, ret = pure_advantages(
        step_rewards,
        step_mask,
        step_ends,
        response_mask,
        group_ids,
        vr,
        mode=mode,
        temperature=temperature,
        vr_coef=0.7,
        max_len=max_len,
        token_penalty=penalty,
        gamma=gamma,
    )
    ref_adv, ref_ret = ref_pure(batch, mode, temperature, 0.7, max_len, gamma)
    assert_close(ret, torch.tensor(ref_ret, dtype=torch.float64))
    assert_close(adv, torch.tensor(ref_adv, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(10))
def test_rloo_and_grpo_match_loops(seed):
    rng = random.Random(seed)
    b = rng.randint(1, 12)
    group_ids = torch.tensor([rng.randint(0, 3) * 7 for _ in range(b)])
    rewards = torch.tensor([rng.choice([0.0, 1.0, 0.5, -1.0, float("nan")]) for _ in range(b)], dtype=torch.float64)
    got = rloo_advantages(rewards, group_ids)
    got_grpo = grpo_advantages(rewards, group_ids, torch.ones(b, 3, dtype=torch.float64))
    for i in range(b):
        if math.isnan(rewards[i]):
            assert got[i] == 0 and (got_grpo[i] == 0).all()
            continue
        members = [rewards[k].item() for k in range(b) if group_ids[k] == group_ids[i] and not math.isnan(rewards[k])]
        others = [rewards[k].item() for k in range(b) if k != i and group_ids[k] == group_ids[i]]
        others = [x for x in others if not math.isnan(x)]
        assert got[i].item() == pytest.approx(rewards[i].item() - (sum(others) / len(others) if others else 0.0))
        if len(members) > 1:
            mean = sum(members) / len(members)
            std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
            expected = (rewards[i].item() - mean) / (std + 1e-6)
        else:
            expected = rewards[i].item() / (1 + 1e-6)  # a group of one: mean 0, std 1 (verl's convention)
        assert_close(got_grpo[i], torch.full((3,), expected, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# Degenerate inputs, limits, dtypes and devices
# --------------------------------------------------------------------------------------------------


def test_empty_responses_and_single_groups_are_nan_free():
    step_rewards = torch.tensor([[float("nan"), float("inf")], [0.4, float("-inf")], [0.0, 0.0]])
    step_mask = torch.tensor([[False, False], [True, False], [False, False]])
    step_ends = torch.tensor([[0, 0], [2, 9], [0, 0]])
    response_mask = torch.tensor([[0.0] * 3, [1.0] * 3, [1.0, 0.0, 0.0]])
    for mode in ("soft_min", "min", "sum"):
        star = transform_step_rewards(step_rewards, step_mask, mode=mode)
        assert torch.isfinite(star).all()
        assert (star[0] == 0).all() and (star[2] == 0).all()
        for group_ids in (torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2])):
            adv, ret = pure_advantages(
                step_rewards, step_mask, step_ends, response_mask, group_ids, torch.tensor([1.0, 0.0, 1.0]), mode=mode
            )
            assert torch.isfinite(adv).all() and torch.isfinite(ret).all()
            assert (ret[0] == 0).all() and (adv[0] == 0).all()  # no tokens: zero everywhere
            assert (ret[2] == 0).all()  # zero steps: return 0, still in its group
    # No steps at all in the batch (S = 0) and no responses at all (B = 0).
    empty = torch.zeros(2, 0)
    assert transform_step_rewards(empty, empty.bool(), mode="soft_min").shape == (2, 0)
    adv, _ = pure_advantages(empty, empty.bool(), empty.long(), torch.ones(2, 3), torch.tensor([0, 0]), mode="soft_min")
    assert (adv == 0).all()
    adv, _ = pure_advantages(
        torch.zeros(0, 2),
        torch.zeros(0, 2).bool(),
        torch.zeros(0, 2).long(),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
        mode="soft_min",
    )
    assert adv.shape == (0, 4)


@pytest.mark.parametrize("seed", range(5))
def test_soft_min_tends_to_min(seed):
    gen = torch.Generator().manual_seed(seed)
    step_rewards = torch.rand(6, 5, generator=gen, dtype=torch.float64) * 2 - 1
    step_mask = torch.rand(6, 5, generator=gen) < 0.8
    hard = transform_step_rewards(step_rewards, step_mask, mode="min")
    gaps = []
    for temperature in (0.3, 0.03, 0.003, 0.0003):
        soft = transform_step_rewards(step_rewards, step_mask, mode="soft_min", temperature=temperature)
        gaps.append((soft - hard).abs().max().item())
    assert gaps[-1] < 1e-6, gaps
    assert gaps == sorted(gaps, reverse=True)


def test_min_keeps_the_first_of_tied_minima():
    step_rewards = torch.tensor([[0.3, -0.1, 0.5, -0.1]])
    star = transform_step_rewards(step_rewards, torch.ones(1, 4, dtype=torch.bool), mode="min")
    assert_close(star, torch.tensor([[0.0, -0.1, 0.0, 0.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device_are_preserved(dtype):
    batch = random_batch(3, dtype=dtype)
    _step_rewards, _step_mask, _step_ends, _response_mask, _group_ids, _vr, _penalty = batch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        moved = [x.to(device) if x is not None else None for x in batch]
        adv, ret = pure_advantages(*moved[:6], mode="soft_min", token_penalty=moved[6])
        assert adv.dtype == ret.dtype == dtype
        assert adv.device.type == ret.device.type == device
        out = grpo_advantages(moved[5], moved[4], moved[3])
        assert out.dtype == dtype and out.device.type == device
        kl = kl_penalty(moved[3], moved[3] * 0.5)
        assert kl.dtype == dtype and kl.device.type == device


def test_bad_arguments_say_what_is_wrong():
    step_rewards, step_mask, step_ends, response_mask = _hand_batch(torch.float32)
    with pytest.raises(ValueError, match="unknown credit mode 'max'"):
        transform_step_rewards(step_rewards, step_mask, mode="max")
    with pytest.raises(ValueError, match="shape mismatch"):
        transform_step_rewards(step_rewards, step_mask[:, :2], mode="soft_min")
    with pytest.raises(ValueError, match="group_ids must have shape"):
        pure_advantages(step_rewards, step_mask, step_ends, response_mask, torch.tensor([0, 1]), mode="min")
    with pytest.raises(ValueError, match="temperature > 0"):
        transform_step_rewards(step_rewards, step_mask, mode="soft_min", temperature=0.0)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(step_rewards, step_rewards, "k9")


# --------------------------------------------------------------------------------------------------
# Companions: masked statistics, whitening, KL estimators
# --------------------------------------------------------------------------------------------------


def test_masked_statistics_match_direct_computation():
    values = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    kept = torch.tensor([1.0, 2.0, 4.0, 6.0], dtype=torch.float64)
    assert_close(masked_mean(values, mask), kept.mean())
    assert_close(masked_var(values, mask), kept.var())
    assert_close(masked_var(values, mask, unbiased=False), kept.var(unbiased=False))
    assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 5.0], dtype=torch.float64))
    assert_close(masked_var(values, mask, dim=1), torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0
    white = masked_whiten(values, mask)
    assert_close(white[mask.bool()], (kept - kept.mean()) / torch.sqrt(kept.var() + 1e-8))
    assert (white[~mask.bool()] == 0).all()
    assert_close(
        masked_whiten(values, mask, shift_mean=False)[mask.bool()],
        (kept - kept.mean()) / torch.sqrt(kept.var() + 1e-8) + kept.mean(),
    )


def test_kl_estimators_by_hand():
    # log p = -1, log q = -2: k1 = 1, k2 = 0.5, k3 = e^(-1) - (-1) - 1 = 0.367879441.
    logp, logq = torch.tensor([[-1.0]]), torch.tensor([[-2.0]])
    assert_close(kl_penalty(logp, logq, "k1"), torch.tensor([[1.0]]))
    assert_close(kl_penalty(logp, logq, "k2"), torch.tensor([[0.5]]))
    assert_close(kl_penalty(logp, logq, "k3"), torch.tensor([[0.367879441]]))
    assert_close(kl_penalty(logp, logq, "low_var_kl"), kl_penalty(logp, logq, "k3"))
    assert_close(kl_penalty(logq, logp, "abs"), torch.tensor([[1.0]]))
    # k3 is clamped like verl: log q - log p = 30 -> clamp 20 -> e^20 - 21, then clamp to 10.
    assert kl_penalty(torch.tensor([-31.0]), torch.tensor([-1.0]), "k3").item() == 10.0
    # k3 is an unbiased estimate of KL(p || q) (while the clamp does not bite): its mean over samples
    # from p approaches the exact KL.
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(0.5 * torch.randn(5, generator=gen, dtype=torch.float64), 0)
    q = torch.softmax(0.5 * torch.randn(5, generator=gen, dtype=torch.float64), 0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    exact = (p * (p / q).log()).sum()
    estimate = kl_penalty(p.log()[samples], q.log()[samples], "k3").mean()
    assert abs(estimate.item() - exact.item()) < 0.01


def test_public_api_names():
    for module in (credit, grpo, kl, stats):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert not hasattr(credit, "ppo_clip_loss") and not hasattr(credit, "masked_mean")  # one home each


def test_zero_and_one_step_responses_the_thank_you_hack():
    """docs/fidelity.md, 'Zero-step responses': an empty response has return 0 on its one token (EOS)
    under every mode; a one-step non-answer that the PRM likes ("Thank you.", 0.9) beats a correct
    solution under min-form without verifiable rewards, and loses to it with them; whitening shifts and
    scales the batch's advantages but keeps their order."""
    from purerl.commands.explain import _group_tensors

    group = [[], [0.9], [0.9, 0.8, 0.9], [0.9, -0.7, 0.8]]  # empty, "Thank you.", solves it, one wrong step
    step_rewards, step_mask, step_ends, response_mask = _group_tensors(group, 10)
    response_mask[0, 0] = 1  # the empty response is its EOS token
    ids = torch.zeros(4, dtype=torch.long)
    vr = torch.tensor([0.0, 0.0, 1.0, 0.0])
    for mode in ("min", "soft_min", "sum"):
        adv, ret = pure_advantages(step_rewards, step_mask, step_ends, response_mask, ids, mode=mode, max_len=40)
        assert (ret[0] == 0).all()
        others = ret[1:].sum(-1) / 40
        assert_close(adv[0, 0], -others.mean())  # its advantage is minus the others' mean value
        white = masked_whiten(adv, response_mask)
        assert torch.equal(adv[:, 0].argsort(), white[:, 0].argsort())
    adv, _ = pure_advantages(step_rewards, step_mask, step_ends, response_mask, ids, mode="min", max_len=40)
    assert adv[1, 0] > adv[2, 0]  # min-form alone prefers "Thank you." (0.9) to the solution (worst step 0.8)
    adv, _ = pure_advantages(step_rewards, step_mask, step_ends, response_mask, ids, vr, mode="min", max_len=40)
    assert adv[2, 0] > adv[1, 0] > adv[0, 0]  # the verifiable reward puts the solution first


def test_whitening_from_summed_moments_equals_whitening_the_whole_batch():
    """Two halves' moments, summed as an all-reduce would, whiten each half as the whole batch is whitened."""
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(6, 9, generator=gen)
    mask = (torch.rand(6, 9, generator=gen) > 0.3).float()
    whole = stats.masked_whiten(values, mask)
    moments = stats.masked_moments(values[:2], mask[:2]) + stats.masked_moments(values[2:], mask[2:])
    assert moments[0] == mask.sum()
    halves = [stats.whiten_from_moments(v, m, moments) for v, m in ((values[:2], mask[:2]), (values[2:], mask[2:]))]
    torch.testing.assert_close(torch.cat(halves), whole, rtol=0, atol=1e-6)
