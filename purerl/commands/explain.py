"""`purerl credit` and `purerl steps`: show what credit assignment and segmentation do to an input.

These are reading aids built on :mod:`purerl.algo.credit` and :mod:`purerl.pipeline.steps`; they compute nothing of
their own. Absurd `purerl credit` arguments are refused with one line (``ValueError``): a reward that
is not a finite number of magnitude at most :data:`MAX_ABS_REWARD`, a temperature that is not finite
or below :data:`MIN_TEMPERATURE`, tokens per step outside 1..:data:`MAX_TOKENS_PER_STEP`, over
:data:`MAX_RESPONSES` responses or :data:`MAX_STEPS` steps in one response, or a group of over
:data:`MAX_POSITIONS` token positions (responses x longest response's tokens) in all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from purerl.algo.credit import TRANSFORMS, pure_advantages, transform_step_rewards
from purerl.pipeline.steps import segment, split_steps
from purerl.registry import DEFAULT_TEMPERATURE

# The built-in example: one prompt, three sampled answers, each step scored by a PRM in [-1, 1].
EXAMPLE_GROUP: dict[str, list[float]] = {
    "solves it": [0.9, 0.8, 0.9],
    "one wrong step": [0.9, -0.7, 0.8],
    "only thinking": [0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
}


MAX_RESPONSES = 64
"""Responses in one `purerl credit` group (one ``--rewards`` each)."""
MAX_STEPS = 1000
"""Steps (rewards) of one response."""
MAX_TOKENS_PER_STEP = 100_000
"""Largest ``--tokens-per-step``."""
MAX_POSITIONS = 4_000_000
"""Token positions of the whole group (responses x tokens of the longest): about 32 MB per float64 tensor."""
MAX_ABS_REWARD = 1e6
"""Largest magnitude of a step reward (PRM scores lie in [-1, 1]; beyond this sums and ``r / T`` overflow)."""
MIN_TEMPERATURE = 1e-6
"""Smallest soft_min temperature (``r / T`` stays finite; min is the ``T -> 0`` limit, shown anyway)."""


def _shown(spec: str, width: int = 60) -> str:
    return repr(spec if len(spec) <= width else spec[:width] + "...")


def parse_rewards(spec: str) -> list[float]:
    """Parse ``"0.9,-0.2,0.8"`` into floats, naming the bad field on error.

    >>> parse_rewards("0.9, -0.2,0.8")
    [0.9, -0.2, 0.8]
    """
    fields = spec.split(",")
    if len(fields) > MAX_STEPS:
        raise ValueError(f"--rewards {_shown(spec)}: {len(fields)} steps; at most {MAX_STEPS}")
    values = []
    for k, field in enumerate(fields):
        try:
            value = float(field)
        except ValueError:
            raise ValueError(f"--rewards {_shown(spec)}: field {k + 1} ({field!r}) is not a number") from None
        if not math.isfinite(value) or abs(value) > MAX_ABS_REWARD:
            raise ValueError(f"--rewards {_shown(spec)}: field {k + 1} ({field.strip()!r}) is not a finite number "
                             f"in [-{MAX_ABS_REWARD:g}, {MAX_ABS_REWARD:g}]")  # fmt: skip
        values.append(value)
    return values


def check_credit_args(responses: dict[str, Sequence[float]], temperature: float, tokens_per_step: int) -> None:
    """Refuse a group or setting that `purerl credit` cannot show (see the module docstring's bounds)."""
    if not responses or len(responses) > MAX_RESPONSES:
        raise ValueError(f"--rewards: {len(responses)} responses; give 1 to {MAX_RESPONSES}")
    for name, rewards in responses.items():
        if len(rewards) > MAX_STEPS:
            raise ValueError(f"--rewards: {name} has {len(rewards)} steps; at most {MAX_STEPS}")
        if not all(math.isfinite(r) and abs(r) <= MAX_ABS_REWARD for r in rewards):
            raise ValueError(f"--rewards: {name} has a reward that is not a finite number in "
                             f"[-{MAX_ABS_REWARD:g}, {MAX_ABS_REWARD:g}]")  # fmt: skip
    if not (math.isfinite(temperature) and temperature >= MIN_TEMPERATURE):
        raise ValueError(f"--temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {temperature}")
    if isinstance(tokens_per_step, bool) or not isinstance(tokens_per_step, int):
        raise ValueError(f"--tokens-per-step must be an integer, got {tokens_per_step!r}")
    if not 1 <= tokens_per_step <= MAX_TOKENS_PER_STEP:
        raise ValueError(f"--tokens-per-step must be in 1..{MAX_TOKENS_PER_STEP}, got {tokens_per_step}")
    positions = len(responses) * max(1, max(len(r) for r in responses.values())) * tokens_per_step
    if positions > MAX_POSITIONS:
        raise ValueError(f"{len(responses)} responses x their longest {max(len(r) for r in responses.values())} "
                         f"steps x {tokens_per_step} tokens per step = {positions} token positions; at most "
                         f"{MAX_POSITIONS} (lower --tokens-per-step)")  # fmt: skip


def _group_tensors(responses: Sequence[Sequence[float]], tokens_per_step: int):
    num = len(responses)
    width = max(1, max(len(r) for r in responses))
    length = max(1, width * tokens_per_step)
    step_rewards = torch.zeros(num, width, dtype=torch.float64)
    step_mask = torch.zeros(num, width, dtype=torch.bool)
    step_ends = torch.zeros(num, width, dtype=torch.long)
    response_mask = torch.zeros(num, length, dtype=torch.float64)
    for i, rewards in enumerate(responses):
        n = len(rewards)
        step_rewards[i, :n] = torch.tensor(rewards, dtype=torch.float64)
        step_mask[i, :n] = True
        step_ends[i, :n] = torch.arange(1, n + 1) * tokens_per_step - 1
        response_mask[i, : n * tokens_per_step] = 1
    return step_rewards, step_mask, step_ends, response_mask


def credit_table(
    responses: dict[str, Sequence[float]], temperature: float = DEFAULT_TEMPERATURE, tokens_per_step: int = 10
) -> str:
    """A text table of how each credit mode values each response of one group.

    For every mode: ``G_0``, the process return at the response's first token (its value), and
    ``A_0``, its advantage there against the other responses of the group. Absurd arguments raise a
    one-line ``ValueError`` (:func:`check_credit_args`).
    """
    check_credit_args(responses, temperature, tokens_per_step)
    names = list(responses)
    tensors = _group_tensors([responses[n] for n in names], tokens_per_step)
    step_rewards, step_mask, step_ends, response_mask = tensors
    group_ids = torch.zeros(len(names), dtype=torch.long)
    lines = [
        f"One prompt, {len(names)} responses, {tokens_per_step} tokens per step, soft_min temperature {temperature}.",
        "G_0 = process return at the first token (the response's value); A_0 = its advantage.",
        "",
        f"{'response':<16} {'steps':>5} {'min r':>7} {'sum r':>7}"
        + "".join(f" {m + ' G_0':>12} {m + ' A_0':>12}" for m in TRANSFORMS),
    ]
    results = {
        mode: pure_advantages(
            step_rewards, step_mask, step_ends, response_mask, group_ids, mode=mode, temperature=temperature
        )
        for mode in TRANSFORMS
    }
    for i, name in enumerate(names):
        raw = step_rewards[i, : len(responses[name])]
        row = f"{name:<16} {len(raw):>5} {raw.min().item() if len(raw) else 0:>7.3f} {raw.sum().item():>7.3f}"
        for adv, ret in results.values():
            row += f" {ret[i, 0].item():>12.3f} {adv[i, 0].item():>12.3f}"
        lines.append(row)
    lines += ["", "Transformed step rewards r* (PURE Eq. 5; min is its T -> 0 limit):"]
    for mode in TRANSFORMS:
        star = transform_step_rewards(step_rewards, step_mask, mode=mode, temperature=temperature)
        for i, name in enumerate(names):
            values = ", ".join(f"{v:.3f}" for v in star[i, : len(responses[name])].tolist())
            lines.append(f"  {mode:<9} {name:<16} [{values}]")
    return "\n".join(lines)


def steps_report(text: str, separator: str = "\n\n", regex: bool = False, tokenizer=None) -> str:
    """A text listing of the steps of ``text``; with a tokenizer, also each step's last token."""
    if tokenizer is None:
        steps = split_steps(text, separator, regex=regex)
        ends = [None] * len(steps)
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        steps, ends = segment(text, enc["offset_mapping"], separator, regex=regex)
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    lines = [f"{len(steps)} step(s)"]
    for k, (step, end) in enumerate(zip(steps, ends)):
        where = f" chars [{step.start}, {step.end})"
        if end is not None:
            where += f", ends at token {end} {tokens[end]!r}"
        lines.append(f"step {k + 1}:{where}\n    {step.text!r}")
    return "\n".join(lines)
