"""Per-step metrics of sampled responses, and detectors of the reward-hacking patterns PURE reports.

Patterns (DESIGN section 2): (1) only thinking, never solving: steps or length per response rise to
the cap (sum-form); (2) one giant step; (3) zero steps: empty or near-empty answers a PRM scores well;
and long repetitive answers. Each detector compares the current step with the run's first steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from purerl.algo.stats import masked_mean


def repetition_score(steps: Sequence[str]) -> float:
    """Share of a response's steps that repeat an earlier step of the same response (0 = none)."""
    if not steps:
        return 0.0
    seen, repeats = set(), 0
    for s in steps:
        key = " ".join(s.split())
        repeats += key in seen
        seen.add(key)
    return repeats / len(steps)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def response_metrics(
    *,
    correct: Sequence[bool | None],
    group_ids: Sequence[int],
    steps: Sequence[Sequence[str]],
    step_scores: Sequence[Sequence[float]] | None,
    transformed: torch.Tensor | None,
    response_mask: torch.Tensor,
    truncated: torch.Tensor,
) -> dict[str, float]:
    """The paper's monitoring set for one batch of responses.

    Args:
        correct: per response, whether its final answer is right (None: no answer found); graded
            against every prompt's answer, including prompts that carry no VR (monitoring only).
        group_ids: (B,) prompt of each response.
        steps: the step texts of each response.
        step_scores: raw PRM scores per step (None for VR-only runs).
        transformed: (B, S) transformed step rewards (None for VR-only runs).
        response_mask: (B, T).
        truncated: (B,) bool.
    """
    lengths = response_mask.sum(-1).float().tolist()
    ok = [c is True for c in correct]
    groups: dict[int, list[bool]] = {}
    for g, c in zip(group_ids, ok):
        groups.setdefault(int(g), []).append(c)
    n_steps = [len(s) for s in steps]
    metrics = {
        "reward/accuracy": _mean([float(c) for c in ok]),
        "reward/pass_at_k": _mean([float(any(v)) for v in groups.values()]),
        "reward/no_answer": _mean([float(c is None) for c in correct]),
        "response/steps": _mean(n_steps),
        "response/steps_max": float(max(n_steps) if n_steps else 0),
        "response/length": _mean(lengths),
        "response/length_correct": _mean([n for n, c in zip(lengths, ok) if c]),
        "response/length_incorrect": _mean([n for n, c in zip(lengths, ok) if not c]),
        "response/truncated": truncated.float().mean().item(),
        "response/zero_steps": _mean([float(n == 0) for n in n_steps]),
        "response/one_step": _mean([float(n == 1) for n in n_steps]),
        "response/repetition": _mean([repetition_score(s) for s in steps]),
    }
    if step_scores is not None and transformed is not None:
        scored = [[x for x in row if x == x] for row in step_scores]  # drop NaN: steps the PRM never saw
        scored = [row for row in scored if row]
        metrics["prm/min_raw"] = _mean([min(row) for row in scored])
        metrics["prm/sum_raw"] = _mean([sum(row) for row in scored])
        metrics["prm/sum_transformed"] = transformed.sum(-1).mean().item()
        metrics["prm/step_mean"] = _mean([x for row in scored for x in row])
    return metrics


def tensor_stats(name: str, values: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean / max / min of ``values`` over ``mask`` as ``name/mean`` etc."""
    kept = values[mask.bool()]
    if kept.numel() == 0:
        return {f"{name}/mean": 0.0, f"{name}/max": 0.0, f"{name}/min": 0.0}
    return {
        f"{name}/mean": masked_mean(values, mask).item(),
        f"{name}/max": kept.max().item(),
        f"{name}/min": kept.min().item(),
    }


FLAGS = ("length_to_cap", "step_inflation", "zero_steps", "one_giant_step", "repetition", "proxy_divergence")
"""Every flag :class:`HackingMonitor` can raise."""


class HackingMonitor:
    """Raises named flags when a batch shows a reward-hacking signature against the run's start.

    Flags: ``length_to_cap`` (over half the responses hit the length cap), ``step_inflation`` (steps
    per response over twice the starting value), ``zero_steps`` (over 20% empty or zero-step answers),
    ``one_giant_step`` (over half single-step answers where the start had under 10%),
    ``repetition`` (over 30% repeated steps), and ``proxy_divergence``: the definition of reward
    hacking itself, the PRM's value of the responses (``prm/min_raw``, averaged over the last
    ``window`` steps) up by over an eighth of its [-1, 1] range while their accuracy (graded against
    every prompt's answer, rewarded or not) is down by over 0.05 from the start. This catches hacks of
    any shape, e.g. answers that shrink (remaining operations dropped) into ones the PRM scores well.
    """

    def __init__(self, warmup: int = 3, window: int = 5):
        self.warmup = warmup
        self.window = window
        self.start: dict[str, float] = {}
        self.recent: list[tuple[float, float]] = []
        self.seen = 0

    def _proxy_divergence(self, metrics: dict[str, float]) -> bool:
        prm, acc = metrics.get("prm/min_raw"), metrics.get("reward/accuracy")
        if prm is None or acc is None or prm != prm or acc != acc:
            return False
        self.recent = [*self.recent, (prm, acc)][-self.window :]
        if self.seen <= self.warmup or len(self.recent) < self.window:
            return False
        prm_now = sum(p for p, _ in self.recent) / self.window
        acc_now = sum(a for _, a in self.recent) / self.window
        return prm_now > self.start["prm/min_raw"] + 0.25 and acc_now < self.start["reward/accuracy"] - 0.05

    def update(self, metrics: dict[str, float]) -> list[str]:
        keys = [k for k in ("response/steps", "response/one_step", "prm/min_raw", "reward/accuracy") if k in metrics]
        if self.seen < self.warmup:
            for k in keys:
                self.start[k] = self.start.get(k, 0.0) + metrics[k] / self.warmup
        self.seen += 1
        flags = []
        if metrics["response/truncated"] > 0.5:
            flags.append("length_to_cap")
        if self.seen > self.warmup and metrics["response/steps"] > 2 * self.start["response/steps"]:
            flags.append("step_inflation")
        if metrics["response/zero_steps"] > 0.2:
            flags.append("zero_steps")
        if self.seen > self.warmup and metrics["response/one_step"] > 0.5 > 5 * self.start["response/one_step"]:
            flags.append("one_giant_step")
        if metrics["response/repetition"] > 0.3:
            flags.append("repetition")
        if self._proxy_divergence(metrics):
            flags.append("proxy_divergence")
        return flags
