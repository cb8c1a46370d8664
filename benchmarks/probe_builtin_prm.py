"""How the built-in PRM scores one step of each kind of mistake (docs/builtin-models.md's probe table).

For 300 problems: a prefix of correct steps, then one step that is correct, applies another operation,
has a wrong result, makes the borrowing misconception, does not start from the value written last,
miscopies an operation of the remainder, or drops the end of the remainder. Prints the mean score
of that last step and the share scored below 0. Then, as a min-form policy sees it, whole answers:
the reference solution against one that drops the end of the remainder at one step and carries on
consistently from the shorter expression (shorter, wrong, every other step right): the mean of each
one's min score and how often the shortened answer's min is at least the reference's (a policy
trained on the min gains from dropping when this is high).

    python benchmarks/probe_builtin_prm.py [PRM folder]   # default: the PRM `purerl train` uses
"""

from __future__ import annotations

import random
import sys

import torch

from purerl.config import PRMConfig, load_config
from purerl.models.builtin import prm_path
from purerl.prm.loading import load_prm
from purerl.tasks import arithmetic as A


def probes(task: A.ArithmeticConfig, n: int = 300) -> dict[str, list[tuple[str, list[str]]]]:
    rng = random.Random(7)
    items: dict[str, list[tuple[str, list[str]]]] = {
        k: [] for k in ("correct", "another operation", "wrong result", "misconception", "wrong start value",
                        "miscopied operation", "dropped remainder")
    }  # fmt: skip
    for _ in range(n):
        p = A.random_problem(rng, task)
        v, rest, prefix = p.start, p.ops, []
        for _ in range(rng.randrange(len(rest))):
            (op, x), rest = rest[0], rest[1:]
            nv = A.apply(op, v, x, p.modulus)
            prefix.append(A.op_step(v, op, x, nv, rest))
            v = nv
        (op, x), tail = rest[0], rest[1:]
        good = A.apply(op, v, x, p.modulus)

        def add(kind: str, step: str, prompt: str = p.prompt, prefix: list[str] = prefix) -> None:
            items[kind].append((prompt, [*prefix, step]))

        add("correct", A.op_step(v, op, x, good, tail))
        other = "+" if op == "-" else "-"
        if A.apply(other, v, x, p.modulus) != good:
            add("another operation", A.op_step(v, other, x, A.apply(other, v, x, p.modulus), tail))
        add("wrong result", A.op_step(v, op, x, (good + rng.randint(1, 9)) % p.modulus, tail))
        start = (v + rng.randint(1, 9)) % p.modulus
        add("wrong start value", A.op_step(start, op, x, A.apply(op, start, x, p.modulus), tail))
        if op == "-" and v < x:
            add("misconception", A.op_step(v, op, x, x - v, tail))
        if tail:
            add("miscopied operation", A.op_step(v, op, x, good, A._miscopy(tail, rng, A.ArithmeticConfig(ops="+-"))))
            add("dropped remainder", A.op_step(v, op, x, good, tail[: rng.randrange(len(tail))]))
    return items


def dropped_pairs(task: A.ArithmeticConfig, n: int = 300) -> list[tuple[str, list[str], list[str]]]:
    """(prompt, reference steps, steps that drop the end of the remainder at one step and carry on)."""
    rng = random.Random(11)
    out = []
    while len(out) < n:
        p = A.random_problem(rng, task)
        at = rng.randrange(len(p.ops) - 1)  # a step that has a remainder to drop from
        steps, v, rest, i = [], p.start, p.ops, 0
        while rest:
            (op, x), rest = rest[0], rest[1:]
            nv = A.apply(op, v, x, p.modulus)
            if i == at:
                rest = rest[: rng.randrange(len(rest))]
            steps.append(A.op_step(v, op, x, nv, rest))
            v, i = nv, i + 1
        steps.append(f"The answer is \\boxed{{{v}}}.")
        out.append((p.prompt, A.reference_solution(p).split(A.SEPARATOR), steps))
    return out


def main() -> None:
    cfg = load_config()
    folder = sys.argv[1] if len(sys.argv) > 1 else prm_path(cfg)
    prm = load_prm(PRMConfig(path=str(folder)))
    print(f"PRM: {folder}")
    print(f"{'last step':<22} {'n':>4} {'mean score':>11} {'scored < 0':>11}")
    with torch.no_grad():
        for kind, items in probes(cfg.task).items():
            last = [s[-1] for s in prm.score([a for a, _ in items], [b for _, b in items])]
            below = sum(x < 0 for x in last) / len(last)
            print(f"{kind:<22} {len(last):>4} {sum(last) / len(last):>+11.2f} {below:>11.2f}")
        pairs = dropped_pairs(cfg.task)
        prompts = [p for p, _, _ in pairs]
        ref = [min(s) for s in prm.score(prompts, [r for _, r, _ in pairs])]
        drop = [min(s) for s in prm.score(prompts, [d for _, _, d in pairs])]
        wins = sum(d >= r for d, r in zip(drop, ref)) / len(pairs)
        print(
            f"whole answers ({len(pairs)}): min score reference {sum(ref) / len(ref):+.2f}, "
            f"dropped end and carried on {sum(drop) / len(drop):+.2f}; dropped >= reference in {wins:.2f}"
        )


if __name__ == "__main__":
    main()
