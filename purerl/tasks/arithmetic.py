"""The built-in task: chains of single-digit operations modulo 10, solved one operation per step.

A problem is a start digit and a list of operations applied left to right, e.g.
``Q: (7+3-2+1) mod 10``. Its solution writes one operation per step (``7+3=0``), steps separated by a
blank line, and ends with ``The answer is \\boxed{9}.`` Digits are written the same way in the prompt
and in the steps (no space before them), so that the tokenizer gives them the same tokens. Sampled
training solutions contain what real chains of thought contain:

- mistakes: a step whose result is wrong; later steps carry on from the wrong value;
- correct but useless steps ("filler": restating, planning, checking), which PRM800K-style labels call
  correct as long as nothing before them is wrong. These are what a sum-form policy learns to spam.

Step labels are exact and local, as PRM800K annotators judge steps (see ``_expected_steps``).
Difficulty knobs: the number of operations, the modulus (operand size) and the mix of operations.
Deterministic by seed; train and held-out problems are disjoint by construction (a hash of the
problem's text picks its split).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

FILLERS = (
    "Let me check the last step.",
    "Now the next operation.",
    "So far so good.",
    "We keep working mod 10.",
    "Let me restate the problem.",
    "I will go step by step.",
)
SEPARATOR = "\n\n"
_OP_STEP = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)\s*$")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class ArithmeticConfig:
    """Difficulty and sampling knobs of the built-in task."""

    min_ops: int = 2
    """Fewest operations in a problem."""
    max_ops: int = 4
    """Most operations in a problem."""
    modulus: int = 10
    """Results are taken modulo this (start values are drawn from 0..modulus-1)."""
    max_operand: int = 3
    """Operands are drawn from 1..max_operand (the operand-size knob)."""
    ops: str = "+-"
    """The operations to mix (any of ``+-*``)."""
    heldout_percent: int = 10
    """Share of all problems (by hash) reserved for held-out evaluation."""
    error_rate: float = 0.2
    """Chance that a sampled solution's operation step has a wrong result (warm-start and PRM data)."""
    filler_rate: float = 0.15
    """Chance of a correct-but-useless step after each step of a sampled solution."""


@dataclass(frozen=True)
class Problem:
    """One problem: ``start (op operand)...`` modulo ``modulus``."""

    start: int
    ops: tuple[tuple[str, int], ...]
    modulus: int = 10

    @property
    def prompt(self) -> str:
        ops = "".join(f"{op}{x}" for op, x in self.ops)
        return f"Q: ({self.start}{ops}) mod {self.modulus}\nA:\n"

    @property
    def values(self) -> list[int]:
        """The running value after each operation (the last one is the answer)."""
        out, v = [], self.start
        for op, x in self.ops:
            v = apply(op, v, x, self.modulus)
            out.append(v)
        return out

    @property
    def answer(self) -> str:
        return str(self.values[-1])


def apply(op: str, a: int, b: int, modulus: int) -> int:
    if op == "+":
        return (a + b) % modulus
    if op == "-":
        return (a - b) % modulus
    if op == "*":
        return (a * b) % modulus
    raise ValueError(f"unknown operation {op!r}")


def split_of(problem: Problem, cfg: ArithmeticConfig) -> str:
    digest = hashlib.sha256(problem.prompt.encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") % 100 < cfg.heldout_percent else "train"


def random_problem(rng: random.Random, cfg: ArithmeticConfig) -> Problem:
    n = rng.randint(cfg.min_ops, cfg.max_ops)
    ops = tuple((rng.choice(cfg.ops), rng.randint(1, cfg.max_operand)) for _ in range(n))
    return Problem(rng.randint(0, cfg.modulus - 1), ops, cfg.modulus)


def generate_problems(cfg: ArithmeticConfig, n: int, split: str, seed: int) -> list[Problem]:
    """``n`` problems of ``split`` ("train" or "heldout"), deterministic in ``seed``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    out = []
    for _ in range(n * 1000):
        p = random_problem(rng, cfg)
        if split_of(p, cfg) == split:
            out.append(p)
            if len(out) == n:
                return out
    raise ValueError(f"could not draw {n} {split} problems; widen the task's knobs")


def sample_solution(problem: Problem, rng: random.Random, cfg: ArithmeticConfig) -> tuple[list[str], list[bool]]:
    """A solution with realistic mistakes and filler steps, and the exact (local) label of each step."""
    steps: list[str] = []
    labels: list[bool] = []
    v = problem.start
    for op, x in problem.ops:
        result = apply(op, v, x, problem.modulus)
        ok = rng.random() >= cfg.error_rate
        if not ok:
            result = rng.choice([r for r in range(problem.modulus) if r != result])
        steps.append(f"{v}{op}{x}={result}")
        labels.append(ok)
        v = result
        if rng.random() < cfg.filler_rate:
            steps.append(rng.choice(FILLERS))
            labels.append(True)
    steps.append(f"The answer is \\boxed{{{v}}}.")
    labels.append(True)
    return steps, labels


def corrupt_solution(problem: Problem, steps: list[str], rng: random.Random, rate: float) -> list[str]:
    """Add the mistakes a sampling policy makes beyond wrong results, each step with chance ``rate``.

    Wrong operation or operand (computed consistently), a wrong carried value, a fragment of a step
    (``"1}."``, ``"Let me"``), or the answer given before the last operation. A PRM trained only on
    well-formed steps scores such outputs at random: the blind spots a policy then exploits.
    """
    out = []
    for step in steps:
        m = _OP_STEP.match(step)
        roll = rng.random()
        if roll >= rate:
            out.append(step)
        elif m and roll < rate / 3:
            a, x = int(m.group(1)), rng.randint(1, 9)
            op = rng.choice("+-*")
            out.append(f"{a}{op}{x}={apply(op, a, x, problem.modulus)}")
        elif m and roll < 2 * rate / 3:
            a = (int(m.group(1)) + rng.randint(1, problem.modulus - 1)) % problem.modulus
            op, x = m.group(2), int(m.group(3))
            out.append(f"{a}{op}{x}={apply(op, a, x, problem.modulus)}")
        elif roll < 0.8 * rate:
            cut = rng.randint(1, max(1, len(step) - 1))
            out.append((step[:cut] if rng.random() < 0.5 else step[cut:]).strip() or step)
        else:
            out.append(f"The answer is \\boxed{{{rng.randint(0, problem.modulus - 1)}}}.")
    return out


def reference_solution(problem: Problem) -> str:
    steps, v = [], problem.start
    for op, x in problem.ops:
        r = apply(op, v, x, problem.modulus)
        steps.append(f"{v}{op}{x}={r}")
        v = r
    steps.append(f"The answer is \\boxed{{{v}}}.")
    return SEPARATOR.join(steps)


def extract_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, or None.

    >>> extract_answer("2*3=6\\n\\nThe answer is \\\\boxed{6}.")
    '6'
    """
    found = _BOXED.findall(text)
    return found[-1].strip() if found else None


def grade(text: str, problem: Problem) -> bool | None:
    """True / False for a found answer, None when the response has no boxed answer.

    >>> grade("The answer is \\\\boxed{4}.", Problem(2, (("+", 2),)))
    True
    """
    answer = extract_answer(text)
    return None if answer is None else answer == problem.answer


def _expected_steps(problem: Problem, steps: list[str]):
    """For each step: its kind ("op", "answer", "filler") and the correct text it should have had.

    Step labels are *local*, as PRM800K annotators judge a step: an operation step is correct when it
    applies the problem's next operation to the value the previous step wrote and gets the result
    right; the answer step when it boxes the value the steps reached, after every operation; a
    filler step (one of ``FILLERS``) is correct but useless; any other text is malformed, so wrong.
    A solution that carries on from a wrong value is thus
    wrong at that one step (which the min-form sees), not at every later step.
    """
    written, k = problem.start, 0
    for step in steps:
        m = _OP_STEP.match(step)
        if m:
            r = int(m.group(4))
            want = problem.ops[k] if k < len(problem.ops) else None
            expected = (
                f"{written}{want[0]}{want[1]}={apply(want[0], written, want[1], problem.modulus)}" if want else ""
            )
            yield "op", expected
            written, k = r, k + 1
        elif extract_answer(step) is not None:
            yield "answer", f"The answer is \\boxed{{{written}}}." if k == len(problem.ops) else ""
        elif " ".join(step.split()) in FILLERS:
            yield "filler", None
        else:
            yield "malformed", ""


def first_bad_chars(problem: Problem, steps: list[str]) -> list[int | None]:
    """For each step, the first character at which it stops being a prefix of its correct version.

    ``None`` for a correct step. This lets a PRM be trained on every token of a step ("still a prefix
    of a correct step", DESIGN section 6), not only at the step's end.
    """
    out: list[int | None] = []
    for step, (kind, expected) in zip(steps, _expected_steps(problem, steps)):
        if kind == "filler" or step.strip() == expected:
            out.append(None)
            continue
        common = 0
        while common < min(len(step), len(expected)) and step[common] == expected[common]:
            common += 1
        out.append(common)
    return out


def check_steps(problem: Problem, steps: list[str]) -> list[bool]:
    """Rule-based step labels for any text steps (the exact checker; usable as a "PRM").

    Local semantics, see :func:`_expected_steps`.
    """
    return [bad is None for bad in first_bad_chars(problem, steps)]


_PROMPT = re.compile(r"^Q: \((\d+)((?:[+\-*]\d+)+)\) mod (\d+)\nA:\n$")


def parse_prompt(prompt: str) -> Problem:
    """The problem a prompt of this task states (inverse of ``Problem.prompt``)."""
    m = _PROMPT.match(prompt)
    if not m:
        raise ValueError(f"not a prompt of the arithmetic task: {prompt!r}")
    ops = tuple((op, int(x)) for op, x in re.findall(r"([+\-*])(\d+)", m.group(2)))
    return Problem(int(m.group(1)), ops, int(m.group(3)))


def rule_checker(prompt: str, steps: list[str]) -> list[bool]:
    """:func:`check_steps` on the problem a prompt states: the rule-based "PRM" of this task."""
    return check_steps(parse_prompt(prompt), steps)
