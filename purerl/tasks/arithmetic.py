"""The built-in task: chains of single-digit operations modulo 10, solved one operation per step.

A problem is a start digit and a list of operations applied left to right, e.g.
``Q: (7+3-2+1) mod 10``. Its solution applies one operation per step and rewrites what is left
(``7+3=0 (0-2+1)``, ``0-2=8 (8+1)``, ``8+1=9``), steps separated by a blank line, and ends with
``The answer is \\boxed{9}.`` Every step can thus be checked from nearby text, as a reader checks a
worked solution: its arithmetic inside the step, the operation it applies against the head of the
expression written last, and its rewrite against that expression's tail; nothing requires counting
operations in the prompt. Digits are written the same way in the prompt and in the steps (no space
before them), so that the tokenizer gives them the same tokens. Sampled training solutions contain
what real chains of thought contain:

- mistakes: a wrong result or a miscopied remainder; later steps carry on from what was written;
- a systematic misconception: a borrowing subtraction (``1-3``) done as ``3-1`` (the value 2, not 8)
  most of the time, so that greedy decoding follows it and starts well below its ceiling;
- correct but useless steps ("filler": restating, planning, checking), which PRM800K-style labels call
  correct as long as nothing before them is wrong. These are what a sum-form policy learns to spam.

Step labels are exact and local, as PRM800K annotators judge steps (see ``_expected_steps``).
Difficulty knobs: the number of operations, the modulus (operand size), the mix of operations and the
rates of mistakes. Deterministic by seed; train and held-out problems are disjoint by construction (a
hash of the problem's text picks its split).
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
FORMAT = "op-rewrite"
"""Name of the solution format; part of the built-in models' cache keys, so a format change never
reuses a model trained on the old one."""
_OP_STEP = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)\s*(?:\(\s*(\d+)((?:\s*[+\-*]\s*\d+)+)\s*\))?\s*$")
_OPERATION = re.compile(r"([+\-*])\s*(\d+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")

Ops = tuple[tuple[str, int], ...]


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
    """Chance that a sampled solution's step has a mistake (warm-start and PRM data): a wrong result,
    or (one time in four) a miscopied remainder."""
    misconception_rate: float = 0.6
    """Chance that a borrowing subtraction ``a-b`` (``a < b``) is written as ``b-a``, a systematic
    error: above 0.5, greedy decoding of the warm start makes it."""
    filler_rate: float = 0.15
    """Chance of a correct-but-useless step after each step of a sampled solution."""


@dataclass(frozen=True)
class Problem:
    """One problem: ``start (op operand)...`` modulo ``modulus``."""

    start: int
    ops: Ops
    modulus: int = 10

    @property
    def prompt(self) -> str:
        return f"Q: ({self.start}{_ops_text(self.ops)}) mod {self.modulus}\nA:\n"

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


def _ops_text(ops: Ops) -> str:
    return "".join(f"{op}{x}" for op, x in ops)


def op_step(value: int, op: str, operand: int, result: int, rest: Ops) -> str:
    """The text of a step that applies ``op operand`` to ``value`` and leaves ``result`` followed by the
    operations ``rest``.

    >>> op_step(7, "+", 3, 0, (("-", 2), ("+", 1))), op_step(8, "+", 1, 9, ())
    ('7+3=0 (0-2+1)', '8+1=9')
    """
    return f"{value}{op}{operand}={result}" + (f" ({result}{_ops_text(rest)})" if rest else "")


def parse_op_step(step: str) -> tuple[tuple[int, str, int, int], int, Ops] | None:
    """``((value, op, operand, result), value left, operations left)`` of an operation step, or None for
    any other text. Without a rewritten expression, what is left is the result alone."""
    m = _OP_STEP.match(step)
    if not m:
        return None
    applied = (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))
    if m.group(5) is None:
        return applied, applied[3], ()
    return applied, int(m.group(5)), tuple((op, int(x)) for op, x in _OPERATION.findall(m.group(6)))


def split_of(problem: Problem, cfg: ArithmeticConfig) -> str:
    digest = hashlib.sha256(problem.prompt.encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") % 100 < cfg.heldout_percent else "train"


def random_problem(rng: random.Random, cfg: ArithmeticConfig) -> Problem:
    n = rng.randint(cfg.min_ops, cfg.max_ops)
    ops = tuple((rng.choice(cfg.ops), rng.randint(1, cfg.max_operand)) for _ in range(n))
    return Problem(rng.randint(0, cfg.modulus - 1), ops, cfg.modulus)


def draw_problem(rng: random.Random, cfg: ArithmeticConfig, split: str = "train", tries: int = 1000) -> Problem:
    """The first random problem of ``split`` ("train" or "heldout") that ``rng`` draws."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    for _ in range(tries):
        p = random_problem(rng, cfg)
        if split_of(p, cfg) == split:
            return p
    raise ValueError(f"could not draw a {split} problem in {tries} tries; widen the task's knobs")


def generate_problems(cfg: ArithmeticConfig, n: int, split: str, seed: int) -> list[Problem]:
    """``n`` problems of ``split`` ("train" or "heldout"), deterministic in ``seed``."""
    rng = random.Random(f"{split}-{seed}")
    return [draw_problem(rng, cfg, split) for _ in range(n)]


def _miscopy(rest: Ops, rng: random.Random, cfg: ArithmeticConfig) -> Ops:
    """``rest`` with one operation's sign or operand changed, or one operation dropped."""
    k = rng.randrange(len(rest))
    op, x = rest[k]
    kind = rng.random()
    if kind < 0.25:
        return rest[:k] + rest[k + 1 :]
    if kind < 0.6 and len(cfg.ops) > 1:
        return (*rest[:k], (rng.choice([o for o in cfg.ops if o != op]), x), *rest[k + 1 :])
    others = [y for y in range(1, max(cfg.max_operand, 2) + 1) if y != x]
    return (*rest[:k], (op, rng.choice(others)), *rest[k + 1 :])


def _drop_end(rest: Ops, rng: random.Random) -> Ops:
    """``rest`` without its last operations (one or more, possibly all)."""
    return rest[: rng.randrange(len(rest))]


def sample_solution(
    problem: Problem, rng: random.Random, cfg: ArithmeticConfig, rewrite_share: float = 0.25, drop_share: float = 0.0
) -> tuple[list[str], list[bool]]:
    """A solution with realistic mistakes and filler steps, and the exact (local) label of each step.

    ``rewrite_share``: share of mistakes made in rewriting what is left rather than in the result;
    ``drop_share``: share of those that drop the end of what is left (the others miscopy it). Later
    steps carry on from what was written, so a dropped end gives a shorter, locally consistent
    solution that is wrong at one step only.
    """
    steps: list[str] = []
    labels: list[bool] = []
    v, rest = problem.start, problem.ops
    while rest:
        (op, x), tail = rest[0], rest[1:]
        result, ok = apply(op, v, x, problem.modulus), True
        if rng.random() < cfg.error_rate:
            ok = False
            if tail and rng.random() < rewrite_share:
                tail = _drop_end(tail, rng) if drop_share and rng.random() < drop_share else _miscopy(tail, rng, cfg)
            else:
                result = rng.choice([r for r in range(problem.modulus) if r != result])
        elif op == "-" and v < x and rng.random() < cfg.misconception_rate:
            result, ok = x - v, False
        steps.append(op_step(v, op, x, result, tail))
        labels.append(ok)
        v, rest = result, tail
        if rng.random() < cfg.filler_rate:
            steps.append(rng.choice(FILLERS))
            labels.append(True)
    steps.append(f"The answer is \\boxed{{{v}}}.")
    labels.append(True)
    return steps, labels


_LOOSE = ArithmeticConfig(ops="+-")


def corrupt_solution(problem: Problem, steps: list[str], rng: random.Random, rate: float) -> list[str]:
    """Add the mistakes a sampling policy makes beyond those of :func:`sample_solution`, each step with
    chance ``rate``: another operation applied than the one the expression starts with (computed
    consistently), a value not carried from the step before, a result not carried into the rewrite,
    a rewrite that drops the last operations or miscopies one, a fragment of a step (``"1}."``,
    ``"7+3=0 (0-"``), or the answer given before the last operation. A PRM trained only on
    well-formed steps scores such outputs at random: the blind spots a policy then exploits.
    """
    out = []
    for step in steps:
        parsed = parse_op_step(step)
        roll = rng.random()
        if roll >= rate:
            out.append(step)
        elif parsed and roll < 0.6 * rate:
            (a, op, x, _), _, rest = parsed
            kind = rng.random()
            if kind < 0.3:  # another operation or operand, computed right
                op, x = rng.choice([(o, y) for o in "+-" for y in range(1, 4) if (o, y) != (op, x)])
            elif kind < 0.5:  # did not start from the value written last
                a = rng.choice([b for b in range(problem.modulus) if b != a])
            r = apply(op, a, x, problem.modulus)
            if kind < 0.5 or not rest:
                out.append(op_step(a, op, x, r, rest))
            elif kind < 0.65:  # did not carry its result into the rewrite
                other = rng.choice([b for b in range(problem.modulus) if b != r])
                out.append(f"{a}{op}{x}={r} ({other}{_ops_text(rest)})")
            else:  # rewrote what is left wrongly: dropped the last operations, or miscopied one
                wrong = _drop_end(rest, rng) if rng.random() < 0.5 else _miscopy(rest, rng, _LOOSE)
                out.append(op_step(a, op, x, r, wrong))
        elif roll < 0.8 * rate:
            cut = rng.randint(1, max(1, len(step) - 1))
            out.append((step[:cut] if rng.random() < 0.5 else step[cut:]).strip() or step)
        else:
            out.append(f"The answer is \\boxed{{{rng.randint(0, problem.modulus - 1)}}}.")
    return out


def reference_solution(problem: Problem) -> str:
    steps, v, rest = [], problem.start, problem.ops
    while rest:
        (op, x), rest = rest[0], rest[1:]
        r = apply(op, v, x, problem.modulus)
        steps.append(op_step(v, op, x, r, rest))
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
    """For each step: its kind ("op", "answer", "filler", "malformed") and the correct text it should
    have had.

    Step labels are *local*, as PRM800K annotators judge a step: an operation step is correct when it
    applies the first operation of the expression written last (the prompt's, at first), gets the
    result right and rewrites the rest; the answer step when it boxes the value written last, with no
    operation left; a filler step (one of ``FILLERS``) is correct but useless; any other text is
    malformed, so wrong. A solution that carries on from a wrong step is thus wrong at that one step
    (which the min-form sees), not at every later step.
    """
    value, rest = problem.start, problem.ops
    for step in steps:
        parsed = parse_op_step(step)
        if parsed:
            if rest:
                (op, x), tail = rest[0], rest[1:]
                yield "op", op_step(value, op, x, apply(op, value, x, problem.modulus), tail)
            else:
                yield "op", ""
            _, value, rest = parsed
        elif extract_answer(step) is not None:
            yield "answer", "" if rest else f"The answer is \\boxed{{{value}}}."
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
    ops = tuple((op, int(x)) for op, x in _OPERATION.findall(m.group(2)))
    return Problem(int(m.group(1)), ops, int(m.group(3)))


def rule_checker(prompt: str, steps: list[str]) -> list[bool]:
    """:func:`check_steps` on the problem a prompt states: the rule-based "PRM" of this task."""
    return check_steps(parse_prompt(prompt), steps)


class ArithmeticTask:
    """The built-in task behind the :class:`purerl.tasks.Task` protocol (``data.task=arithmetic``)."""

    separator = SEPARATOR
    rule_checker = staticmethod(rule_checker)

    def __init__(self, cfg: ArithmeticConfig, eval_size: int):
        self.cfg = cfg
        self.heldout = generate_problems(cfg, eval_size, "heldout", seed=0)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.data.train.path:
            raise ValueError(
                "data.task=arithmetic is the built-in task: leave data.train.path empty or set data.task=dataset"
            )

    @classmethod
    def from_config(cls, cfg) -> ArithmeticTask:
        return cls(cfg.task, cfg.run.eval_size)

    def sample(self, rng: random.Random, n: int) -> list[Problem]:
        return [draw_problem(rng, self.cfg) for _ in range(n)]

    def grade(self, text: str, problem: Problem) -> bool | None:
        return grade(text, problem)

    @staticmethod
    def has_reward_answer(problem: Problem) -> bool:
        return True
