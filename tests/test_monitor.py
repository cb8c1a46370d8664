"""The hacking detectors on hand-made metric sequences."""

from __future__ import annotations

import copy

import torch

from purerl.pipeline.monitor import HackingMonitor, repetition_score, response_metrics


def row(steps=4.0, truncated=0.0, zero=0.0, one=0.0, rep=0.0, prm=None, acc=0.4):
    out = {"response/steps": steps, "response/truncated": truncated, "response/zero_steps": zero,
           "response/one_step": one, "response/repetition": rep, "reward/accuracy": acc}  # fmt: skip
    if prm is not None:
        out["prm/min_raw"] = prm
    return out


def flags_over(rows, **kw):
    monitor = HackingMonitor(**kw)
    return [monitor.update(r) for r in rows]


def test_healthy_run_raises_nothing():
    rows = [row(prm=-0.5 + 0.05 * i, acc=0.4 + 0.01 * i) for i in range(40)]  # PRM and accuracy rise together
    assert all(f == [] for f in flags_over(rows))


def test_shape_flags():
    start = [row()] * 3
    assert flags_over([*start, row(truncated=0.6)])[-1] == ["length_to_cap"]
    assert flags_over([*start, row(steps=8.1)])[-1] == ["step_inflation"]
    assert flags_over([*start, row(steps=8.0)])[-1] == []  # exactly twice: not over
    assert flags_over([*start, row(zero=0.3)])[-1] == ["zero_steps"]
    assert flags_over([*start, row(one=0.6)])[-1] == ["one_giant_step"]
    assert flags_over([row(one=0.2)] * 3 + [row(one=0.6)])[-1] == []  # the start already had 20% one-step
    assert flags_over([*start, row(rep=0.4)])[-1] == ["repetition"]


def test_proxy_divergence_needs_the_prm_up_and_accuracy_down_over_a_window():
    start = [row(prm=-0.5, acc=0.4)] * 3
    hacked = row(prm=0.0, acc=0.3)
    flags = flags_over([*start, *[hacked] * 6], window=5)
    # window mean: k hacked steps of 5 move the PRM by 0.1 k and accuracy by -0.02 k; k >= 3 is over both
    assert [("proxy_divergence" in f) for f in flags] == [False] * 5 + [True] * 4
    # PRM up with accuracy up: learning, not hacking; accuracy down with the PRM flat: no proxy gain
    assert not any(flags_over([*start, *[row(prm=0.0, acc=0.6)] * 8]))
    assert not any(flags_over([*start, *[row(prm=-0.5, acc=0.2)] * 8]))
    # one noisy step does not flag: the window's mean must move
    assert not any(flags_over([*start, *[row(prm=-0.5, acc=0.4)] * 4, hacked]))
    # VR-only runs have no PRM value: never flagged
    assert not any(flags_over([row(acc=0.4)] * 3 + [row(acc=0.1)] * 8))


def test_monitor_state_survives_a_checkpoint_round_trip():
    rows = [row(prm=-0.5, acc=0.4)] * 3 + [row(prm=0.0, acc=0.3)] * 6
    whole = flags_over(rows)
    first = HackingMonitor()
    for r in rows[:5]:
        first.update(r)
    second = HackingMonitor()
    vars(second).update(copy.deepcopy(vars(first)))  # what Trainer.save / _resume do
    assert [second.update(r) for r in rows[5:]] == whole[5:]


def test_response_metrics_on_a_tiny_batch():
    m = response_metrics(
        correct=[True, False, None, True], group_ids=[0, 0, 1, 1], steps=[["a", "b"], ["a", "a"], [], ["c"]],
        step_scores=[[0.5, -0.2], [0.9, float("nan")], [], [0.1]], transformed=torch.zeros(4, 2),
        response_mask=torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]]), truncated=torch.tensor([0, 1, 0, 0]),
    )  # fmt: skip
    assert m["reward/accuracy"] == 0.5 and m["reward/pass_at_k"] == 1.0 and m["reward/no_answer"] == 0.25
    assert m["response/steps"] == 1.25 and m["response/zero_steps"] == 0.25 and m["response/one_step"] == 0.25
    assert m["response/length_correct"] == 1.5 and m["response/length_incorrect"] == 1.5
    assert m["response/truncated"] == 0.25
    assert abs(m["prm/min_raw"] - (-0.2 + 0.9 + 0.1) / 3) < 1e-9  # NaN scores and unscored responses dropped
    assert repetition_score(["x", " x ", "y"]) == 1 / 3


def latency(pattern: dict, start: int = 6, steps: int = 12, **base) -> int | None:
    """Steps from the first step showing ``pattern`` to the first flag (None: never), after a healthy start."""
    flags = flags_over([row(**base)] * start + [row(**{**base, **pattern})] * steps)
    return next((i - start for i, f in enumerate(flags) if f and i >= start), None)


def test_detection_latency_in_steps():
    """The numbers docs/reliability.md gives: the shape detectors fire on the step the pattern appears;
    proxy divergence needs its 5-step window's means to cross (+0.25 PRM, -0.05 accuracy)."""
    assert latency({"truncated": 0.6}) == 0
    assert latency({"steps": 8.5}) == 0
    assert latency({"zero": 0.3}) == 0
    assert latency({"one": 0.6}) == 0
    assert latency({"rep": 0.4}) == 0
    assert latency({"prm": 0.0, "acc": 0.3}, prm=-0.5, acc=0.4) == 2  # +0.5 PRM, -0.1 accuracy
    assert latency({"prm": 0.5, "acc": 0.1}, prm=-0.5, acc=0.4) == 1  # +1.0 PRM, -0.3 accuracy
    assert latency({"prm": -0.4, "acc": 0.3}, prm=-0.5, acc=0.4) is None  # +0.1 PRM: below the threshold
