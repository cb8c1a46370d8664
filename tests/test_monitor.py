"""The hacking detectors (purerl.pipeline.monitor) on hand-made streams worked out by hand, and the metrics
they read (purerl.pipeline.metrics) on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from purerl.pipeline.metrics import repetition_score, response_metrics
from purerl.pipeline.monitor import FLAGS, HackingMonitor, MonitorSettings, calibrate, flags_at, replay

# 4 calibration steps, levels over 2 steps, 2 noise units: small numbers a test can work out.
SMALL = MonitorSettings(calibration=4, window=2, z=2.0, z_eval=2.0, min_shrink=0.15)


def row(acc, prm=0.5, steps=4.0, length=40.0, hvw=0.1, novr=None, vr=None, **more):
    out = {"reward/accuracy": acc, "reward/responses": 100.0, "prm/min_raw": prm, "prm/value_std": 0.1,
           "prm/high_value_wrong": hvw, "response/steps": steps, "response/length": length,
           "response/truncated": 0.0, "response/zero_steps": 0.0, "response/one_step": 0.0,
           "response/repetition": 0.0}  # fmt: skip
    if novr is not None:
        out.update({"reward/accuracy_novr": novr, "reward/accuracy_vr": vr})
    return {**out, **more}


# accuracy 0.5, 0.6, 0.4, 0.5: start 0.5; differences 0.1, -0.2, 0.1 (sd 0.1414) / sqrt 2 = noise 0.1 (over
# the binomial floor sqrt(0.25 / 100) = 0.05). Steps 4, 4.2, 3.8, 4: start 4, noise 0.2. A level (2 steps)
# is low when under start - 2 * noise / sqrt 2: accuracy 0.3586, steps 3.717 (and, shrinking, under 0.85 * 4).
START = [row(0.5), row(0.6, steps=4.2), row(0.4, steps=3.8), row(0.5)]


def test_calibration_by_hand():
    signals = calibrate(START, SMALL)
    assert signals["reward/accuracy"].start == pytest.approx(0.5)
    assert signals["reward/accuracy"].noise == pytest.approx(0.1)
    assert signals["response/steps"].start == pytest.approx(4.0) and signals["response/steps"].noise == pytest.approx(
        0.2
    )
    # the PRM's value is flat: its noise is the floor, the spread of values over sqrt B = 0.1 / 10
    assert signals["prm/min_raw"].noise == pytest.approx(0.01)
    assert calibrate(START[:3], SMALL) is None  # not before 4 training steps


def test_proxy_divergence_accuracy_down_while_the_prm_holds():
    assert "proxy_divergence" in flags_at([*START, row(0.35), row(0.36)], SMALL)  # level 0.355 < 0.3586
    assert "proxy_divergence" not in flags_at([*START, row(0.37), row(0.36)], SMALL)  # 0.365: within the noise
    # the PRM's value fell with the accuracy (0.5 -> 0.3, far over its noise): the PRM saw it; no divergence
    assert "proxy_divergence" not in flags_at([*START, row(0.35, prm=0.3), row(0.36, prm=0.3)], SMALL)


def test_accuracy_drop_is_measured_from_the_best_level():
    # two window means differ by noise * sqrt 2 / sqrt 2: low under the best level 0.8 - 2 * 0.1 = 0.6
    risen = [*START, row(0.8), row(0.8)]
    assert "accuracy_drop" in flags_at([*risen, row(0.59), row(0.59)], SMALL)  # above the start, below the best
    assert "accuracy_drop" not in flags_at([*risen, row(0.61), row(0.61)], SMALL)
    assert "proxy_divergence" not in flags_at([*risen, row(0.59), row(0.59)], SMALL)  # not below the start


def test_heldout_drop_by_two_standard_errors_of_the_difference():
    evals = {"eval/accuracy": 0.5, "eval/size": 100.0}
    stream = [{"step": 0, **evals}, *START]
    # p0 = 0.5, p = 0.36: SE = sqrt(0.25/100 + 0.2304/100) = 0.0693, 2 SE = 0.1386 < the drop 0.14
    assert "heldout_drop" in flags_at([*stream, row(0.5, **{"eval/accuracy": 0.36, "eval/size": 100.0})], SMALL)
    assert "heldout_drop" not in flags_at([*stream, row(0.5, **{"eval/accuracy": 0.37, "eval/size": 100.0})], SMALL)
    sampled = {"eval/sampled_accuracy": 0.5, "eval/sampled_size": 400.0}  # SE halves with 4x the answers
    stream = [{"step": 0, **evals, **sampled}, *START]
    hit = row(0.5, **{"eval/accuracy": 0.45, "eval/size": 100.0, "eval/sampled_accuracy": 0.42,
                      "eval/sampled_size": 400.0})  # fmt: skip
    assert "heldout_drop" in flags_at([*stream, hit], SMALL)  # sampled: 0.08 > 2 * 0.0349


def test_shrinking_needs_the_noise_the_relative_fall_and_the_prm_holding():
    assert "shrinking" in flags_at([*START, row(0.5, steps=3.3), row(0.5, steps=3.3)], SMALL)
    assert "shrinking" not in flags_at([*START, row(0.5, steps=3.5), row(0.5, steps=3.5)], SMALL)  # under 15%
    assert "shrinking" not in flags_at([*START, row(0.5, steps=3.3, prm=0.3), row(0.5, steps=3.3, prm=0.3)], SMALL)
    short = [row(0.5, length=30.0), row(0.5, length=30.0)]  # tokens: 40 -> 30, noise 0 at the start
    assert "shrinking" in flags_at([*START, *short], SMALL)


def test_prm_disagreement_and_unrewarded_drop():
    high = [row(0.5, hvw=0.4), row(0.5, hvw=0.4)]  # floor sqrt(0.09 / 50) = 0.042: 0.4 > 0.1 + 0.06
    assert "prm_disagreement" in flags_at([*START, *high], SMALL)
    split = [row(a, novr=a, vr=0.5) for a in (0.5, 0.6, 0.4, 0.5)]
    assert "unrewarded_drop" in flags_at([*split, row(0.35, novr=0.3, vr=0.5), row(0.35, novr=0.3, vr=0.5)], SMALL)
    both = [row(0.35, novr=0.3, vr=0.0), row(0.35, novr=0.3, vr=0.0)]  # rewarded prompts fell too
    assert "unrewarded_drop" not in flags_at([*split, *both], SMALL)


def test_shape_flags():
    assert flags_at([*START, row(0.5, **{"response/truncated": 0.6})], SMALL) == ["length_to_cap"]
    assert flags_at([*START, row(0.5, steps=8.1)], SMALL) == ["step_inflation"]
    assert flags_at([*START, row(0.5, **{"response/zero_steps": 0.3})], SMALL) == ["zero_steps"]
    assert flags_at([*START, row(0.5, **{"response/one_step": 0.6})], SMALL) == ["one_giant_step"]
    assert flags_at([*START, row(0.5, **{"response/repetition": 0.4})], SMALL) == ["repetition"]


def test_a_healthy_run_and_a_vr_only_run_raise_nothing():
    rising = [row(0.4 + 0.01 * i + 0.03 * (-1) ** i, prm=0.2 + 0.01 * i) for i in range(60)]
    assert all(f == [] for _, f in replay(rising))
    no_prm = [{k: v for k, v in r.items() if not k.startswith("prm/")} for r in rising]
    assert all(f == [] for _, f in replay(no_prm))
    assert set(FLAGS) >= {"heldout_drop", "accuracy_drop", "proxy_divergence", "shrinking", "prm_disagreement"}


def test_the_monitor_state_survives_a_checkpoint_round_trip():
    stream = [*START, row(0.8), row(0.8), row(0.55), row(0.55), row(0.5)]
    whole = [HackingMonitor(SMALL)]
    flags = [whole[0].update(r) for r in stream]
    first = HackingMonitor(SMALL)
    for r in stream[:5]:
        first.update(r)
    second = HackingMonitor(SMALL)
    second.load_state_dict(first.state_dict())
    assert [second.update(r) for r in stream[5:]] == flags[5:] and any(flags[5:])
    rebuilt = HackingMonitor(SMALL)
    rebuilt.load_state_dict({"warmup": 3}, history=stream[:5])  # an older checkpoint: rows from its history
    assert [rebuilt.update(r) for r in stream[5:]] == flags[5:]


def test_response_metrics_on_a_tiny_batch():
    m = response_metrics(
        correct=[True, False, None, True], group_ids=[0, 0, 1, 1], steps=[["a", "b"], ["a", "a"], [], ["c"]],
        step_scores=[[0.5, -0.2], [0.9, float("nan")], [], [0.1]], transformed=torch.zeros(4, 2),
        response_mask=torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]]), truncated=torch.tensor([0, 1, 0, 0]),
        rewarded=[True, True, False, False],
    )  # fmt: skip
    assert m["reward/accuracy"] == 0.5 and m["reward/pass_at_k"] == 1.0 and m["reward/no_answer"] == 0.25
    assert m["reward/accuracy_vr"] == 0.5 and m["reward/accuracy_novr"] == 0.5
    assert m["response/steps"] == 1.25 and m["response/zero_steps"] == 0.25 and m["response/one_step"] == 0.25
    assert m["response/length_correct"] == 1.5 and m["response/length_incorrect"] == 1.5
    assert m["response/truncated"] == 0.25
    values = [-0.2, 0.9, 0.1]  # min-form values; NaN scores and unscored responses dropped
    assert m["prm/min_raw"] == pytest.approx(sum(values) / 3)
    assert m["prm/value_std"] == pytest.approx(math.sqrt(sum((v - sum(values) / 3) ** 2 for v in values) / 3))
    # right answers -0.2 and 0.1 (median -0.05); the wrong one 0.9 ranks above both: AUROC 0, and of the
    # answers valued at least -0.05 (0.9 wrong, 0.1 right) half are wrong
    assert m["prm/grade_auroc"] == 0.0 and m["prm/high_value_wrong"] == 0.5
    assert m["prm/value_correct"] == pytest.approx(-0.05) and m["prm/value_wrong"] == pytest.approx(0.9)
    assert repetition_score(["x", " x ", "y"]) == 1 / 3
