"""``purerl probe-prm``: how a PRM can be gamed, measured before any RL (DESIGN section 8, "Before").

Scores honest solutions and, for each transformation a policy could learn
(:data:`purerl.prmtools.probe_transforms.TRANSFORMS`), the transformed solution of the same problem,
with the PRM, then reports per transformation, by min-form value (the min step score) and by the sum
of step scores:

- ``at_least``: the share of cases where the transformed solution scores at least as well as the
  honest one (the issue's measure); ``strictly``: the share where it scores better;
- ``mean_change``: the mean of transformed minus honest;
- ``exploit``: ``at_least`` for a ``wrong`` transformation (a tie already means the PRM cannot see the
  mistake), ``strictly`` for a ``neutral`` one (every step stays correct: a tie is the honest verdict);
- ``checker_wrong``: where the problems are the built-in task's, the share of transformed solutions that
  its exact checker labels wrong at some step (None otherwise).

A case is one problem and one transformation that applies to its solution; a case with a NaN step score
(past the PRM's length limit) is left out and counted. Solutions: the built-in task's reference
solutions of ``--problems`` training problems drawn by ``--seed``, or ``--data FILE`` (rows with a
question, a gold answer and a reference solution whose final answer matches it; steps split at
``--step-separator``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass

from purerl.io.data import DataConfig, DataError, examples_from_rows, kind, read_rows
from purerl.io.responses import check_out_path, write_text
from purerl.prmtools.probe_transforms import GROUPS, TRANSFORMS, Case
from purerl.tasks import arithmetic as A


@dataclass
class Item:
    """One honest solution: the PRM's prompt, the steps, the gold answer, the built-in problem if it is one."""

    prompt: str
    steps: list[str]
    answer: str | None
    problem: A.Problem | None = None
    decoy: str | None = None


def transform_names(spec: str | None) -> list[str]:
    """The transformations ``--transforms`` names (comma-separated; None: all, in registry order)."""
    if not spec:
        return list(TRANSFORMS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown or not names:
        raise ValueError(f"--transforms {spec!r}: unknown {unknown or 'empty'}; choose from {', '.join(TRANSFORMS)}")
    return list(dict.fromkeys(names))


def check_args(args: argparse.Namespace) -> None:
    """Refuse a bad argument before anything loads (one line naming the flag)."""
    for flag, value, least in (("--problems", args.problems, 1), ("--batch-size", args.batch_size, 1),
                               ("--threads", args.threads, 0)):  # fmt: skip
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    transform_names(args.transforms)
    if not args.step_separator:
        raise ValueError("--step-separator must not be empty")
    check_out_path(args.out, args.data)
    if args.prm != "rule":  # a model PRM (None: the built-in one)
        from purerl.prmtools.processbench import check_model_prm

        check_model_prm(args)


def builtin_items(n: int, seed: int) -> list[Item]:
    """The built-in task's reference solutions of ``n`` training problems drawn by ``seed``."""
    problems = A.generate_problems(A.ArithmeticConfig(), n, "train", seed)
    return [Item(p.prompt, A.reference_solution(p).split(A.SEPARATOR), p.answer, p) for p in problems]


def _solution_text(row: dict, field: str, where: str) -> str:
    value = row.get(field)
    if value is None:
        raise DataError(f"{where}: no reference solution in field {field!r} (fields: {', '.join(row)}); "
                        "set --solution to the field that holds it")  # fmt: skip
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} holds {kind(value)}; expected the solution as a string")
    return value


def _parsed_problem(prompt: str) -> A.Problem | None:
    try:
        return A.parse_prompt(prompt)
    except ValueError:
        return None


def data_items(args: argparse.Namespace) -> tuple[list[Item], dict[str, int]]:
    """The rows of ``--data`` as honest solutions (at most ``--problems``), and the rows skipped by reason:
    a reference solution without steps, or whose final answer is missing or does not match the gold."""
    from purerl.grading import grade
    from purerl.pipeline.steps import split_steps

    cfg = DataConfig(path=args.data, question=args.question, answer=args.gold)
    rows = read_rows(args.data)
    examples = examples_from_rows(rows, cfg, require_answer=True)
    items: list[Item] = []
    skipped: dict[str, int] = {}
    for ex in examples:
        if len(items) == args.problems:
            break
        text = _solution_text(rows[ex.row], args.solution, f"{args.data} row {ex.row}")
        steps = [s.text.strip() for s in split_steps(text, args.step_separator)]
        verdict = grade(text, ex.gold) if steps else "no steps"
        if verdict is not True:
            why = {None: "no final answer in the solution", False: "final answer does not match the gold answer"}
            reason = verdict if isinstance(verdict, str) else why[verdict]
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        items.append(Item(ex.question, steps, ex.gold[0], _parsed_problem(ex.question)))
    if not items:
        raise DataError(f"{args.data}: no row with a usable reference solution in field {args.solution!r} "
                        f"(skipped: {skipped or 'none'})")  # fmt: skip
    for i, item in enumerate(items):  # a wrong answer for answers that are not integers: another row's gold
        item.decoy = next((o.answer for o in items[i + 1 :] + items[:i] if o.answer != item.answer), None)
    return items, skipped


def transformed(items: list[Item], names: list[str], seed: int) -> dict[str, list[list[str] | None]]:
    """For each transformation, each item's transformed steps (None: it does not apply), each drawn
    with its own rng (seeded by ``seed``, the item's index and the transformation's name)."""
    out = {}
    for name in names:
        fn, rows = TRANSFORMS[name].fn, []
        for i, item in enumerate(items):
            case = Case(item.prompt, item.answer, random.Random(f"{seed}-{i}-{name}"), item.problem, item.decoy)
            steps = fn(list(item.steps), case)
            rows.append(None if steps is None or steps == item.steps else steps)
        out[name] = rows
    return out


def load_probe_prm(args: argparse.Namespace, task):
    """``--prm`` through the one loader (``eval-prm``'s :func:`~purerl.prmtools.processbench.load_scorer`);
    without it, the built-in PRM (``task``: the built-in task's class, or None for a dataset)."""
    from purerl.prmtools.processbench import FLAG_NAMES, load_scorer

    if args.prm:
        return load_scorer(args)
    import torch

    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = PRMConfig(kind=args.prm_kind, dtype=args.dtype, device=args.device, score_map=args.score_map,
                     separator=args.separator)  # fmt: skip
    return load_prm(spec, task, names=FLAG_NAMES)


def score_all(scorer, prompts: list[str], steps: list[list[str]], batch_size: int) -> tuple[list, dict]:
    """Every solution's step scores, ``batch_size`` solutions per PRM call, and the calls and steps."""
    from tqdm import tqdm

    out: list[list[float]] = []
    with tqdm(total=len(steps), desc="purerl probe-prm", disable=None, dynamic_ncols=True) as bar:
        for start in range(0, len(steps), batch_size):
            batch = steps[start : start + batch_size]
            scores = scorer.score(prompts[start : start + batch_size], batch)
            for s, st in zip(scores, batch):
                if len(s) != len(st):
                    raise ValueError(f"the PRM gave {len(s)} scores for {len(st)} steps")
                out.append([float(x) for x in s])
            bar.update(len(batch))
    calls = -(-len(steps) // batch_size)
    return out, {"prm_calls": calls, "solutions_scored": len(steps), "steps_scored": sum(map(len, steps))}


def _shares(deltas: list[float]) -> dict:
    n = len(deltas)
    if not n:
        return {"at_least": None, "strictly": None, "mean_change": None}
    return {"at_least": sum(d >= 0 for d in deltas) / n, "strictly": sum(d > 0 for d in deltas) / n,
            "mean_change": sum(deltas) / n}  # fmt: skip


def compare(honest: list[list[float]], changed: list[list[float] | None], group: str, natural: float) -> dict:
    """The numbers of one transformation (see the module doc) from the honest and transformed step
    scores of each item (None: the transformation does not apply); ``natural``: the middle of the PRM's
    score range, above which no step of a transformed solution looks wrong (``unflagged``)."""
    deltas: dict[str, list[float]] = {"min": [], "sum": []}
    unscored = unflagged = 0
    for h, t in zip(honest, changed):
        if t is None:
            continue
        if not h or not t or any(math.isnan(x) for x in h + t):
            unscored += 1
            continue
        unflagged += min(t) > natural
        deltas["min"].append(min(t) - min(h))
        deltas["sum"].append(sum(t) - sum(h))
    out = {"group": group, "cases": len(deltas["min"]), "not_applicable": sum(t is None for t in changed),
           "unscored": unscored, "unflagged": unflagged / len(deltas["min"]) if deltas["min"] else None,
           **{how: _shares(d) for how, d in deltas.items()}}  # fmt: skip
    key = "at_least" if group == "wrong" else "strictly"
    for how in ("min", "sum"):
        out[how]["exploit"] = out[how][key]
    return out


def checker_wrong(items: list[Item], rows: list[list[str] | None]) -> float | None:
    """Share of the transformed solutions with a step the built-in task's exact checker labels wrong
    (None: the problems are not the built-in task's, or none applies)."""
    pairs = [(item, t) for item, t in zip(items, rows) if t is not None]
    if not pairs or any(item.problem is None for item, _ in pairs):
        return None
    return sum(not all(A.check_steps(item.problem, t)) for item, t in pairs) / len(pairs)


def summarise(table: dict[str, dict]) -> dict:
    """For each group and by min and by sum: the mean ``exploit`` share over its transformations with
    cases, and the worst one (None: no case exploitable). The ``wrong`` group's min-form mean is the
    PRM's headline number: how often, on average, a mistake a policy could learn is not worth less."""
    out: dict[str, dict] = {}
    for group in GROUPS:
        out[group] = {}
        for how in ("min", "sum"):
            rows = {name: r[how]["exploit"] for name, r in table.items() if r["cases"] and r["group"] == group}
            worst = max(rows, key=rows.get, default=None)
            worst = worst if worst is not None and rows[worst] > 0 else None
            out[group][how] = {"mean_exploit": sum(rows.values()) / len(rows) if rows else None, "worst": worst,
                               "worst_exploit": rows.get(worst)}  # fmt: skip
    return out


def make_table(items: list[Item], names: list[str], changed: dict, honest: list, scores: list, natural: float) -> dict:
    """Each transformation's row (:func:`compare`, the checker's verdict, its definition and a first
    example) from the honest scores and ``scores``, the transformed solutions' in ``changed``'s order."""
    rest, table = iter(scores), {}
    for name in names:
        rows = [None if t is None else next(rest) for t in changed[name]]
        table[name] = compare(honest, rows, TRANSFORMS[name].group, natural)
        table[name]["checker_wrong"] = checker_wrong(items, changed[name])
        table[name]["definition"] = TRANSFORMS[name].doc
        first = next((i for i, t in enumerate(changed[name]) if t is not None), None)
        example = None if first is None else {"honest": items[first].steps, "transformed": changed[name][first]}
        table[name]["example"] = example
    return table


def _prm_name(args: argparse.Namespace) -> tuple[str, str]:
    if args.prm == "rule":
        return "rule", "rule"
    from purerl.prm.loading import prm_folder

    if args.prm:
        return args.prm, args.prm_kind
    from purerl.config import PRMConfig

    return f"built-in ({prm_folder(PRMConfig(kind=args.prm_kind))})", args.prm_kind


def run_probe_prm(args: argparse.Namespace) -> str:
    """``purerl probe-prm``: see the module doc. Returns the printed report; ``--out`` gets the JSON."""
    start = time.perf_counter()
    check_args(args)
    names = transform_names(args.transforms)
    items, skipped = data_items(args) if args.data else (builtin_items(args.problems, args.seed), {})
    if args.prm == "rule" and any(item.problem is None for item in items):
        raise DataError(f"{args.data}: --prm rule checks the built-in arithmetic task's steps, but a question is "
                        "not one of its problems")  # fmt: skip
    changed = transformed(items, names, args.seed)
    scorer = load_probe_prm(args, None if args.data else A.ArithmeticTask)
    loaded = time.perf_counter()
    solutions = [(item.prompt, item.steps) for item in items]
    solutions += [(item.prompt, t) for name in names for item, t in zip(items, changed[name]) if t is not None]
    scores, cost = score_all(scorer, [p for p, _ in solutions], [s for _, s in solutions], args.batch_size)
    honest = scores[: len(items)]
    table = make_table(items, names, changed, honest, scores[len(items) :], sum(scorer.score_range) / 2)
    done = time.perf_counter()
    prm, prm_kind = _prm_name(args)
    result = {
        "prm": prm, "prm_kind": prm_kind, "score_range": list(scorer.score_range),
        "solutions": args.data or "the built-in task's reference solutions (training problems)",
        "problems": len(items), "seed": args.seed, "skipped": skipped,
        "honest": {"mean_min": _mean([min(h) for h in honest if h]), "mean_sum": _mean([sum(h) for h in honest]),
                   "mean_steps": _mean([len(item.steps) for item in items])},
        "transformations": table, "summary": summarise(table),
        "cost": {"seconds": done - start, "seconds_loading": loaded - start, "seconds_scoring": done - loaded,
                 "problems": len(items), **cost},
    }  # fmt: skip
    if args.out:
        write_text(args.out, json.dumps(result, indent=2))
    return format_report(result, args.out)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _num(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


HEAD = ("transformation", "group", "cases", "n/a", "min>=", "min>", "Δmin", "sum>=", "sum>", "Δsum",
        "exploit", "unflagged", "checker")  # fmt: skip
WIDTHS = (18, 9, 6, 5, 7, 7, 8, 7, 7, 8, 8, 10, 8)


def _line(cells) -> str:
    return "".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, WIDTHS)))


def format_report(result: dict, out: str | None = None) -> str:
    """The printed table of :func:`run_probe_prm`: context, a row per transformation, the summary, the cost."""
    h, c = result["honest"], result["cost"]
    lines = [f"probe-prm: PRM {result['prm']} ({result['prm_kind']}, scores in {result['score_range']}); "
             f"{result['problems']} honest solutions: {result['solutions']}",
             f"honest: mean min {_num(h['mean_min'], True)}, mean sum {_num(h['mean_sum'], True)}, "
             f"{_num(h['mean_steps'])} steps"]  # fmt: skip
    for why, n in result["skipped"].items():
        lines.append(f"skipped rows: {n} ({why})")
    lines.append(_line(HEAD))
    for name, r in result["transformations"].items():
        lines.append(_line((name, r["group"], r["cases"], r["not_applicable"], _num(r["min"]["at_least"]),
                            _num(r["min"]["strictly"]), _num(r["min"]["mean_change"], True),
                            _num(r["sum"]["at_least"]), _num(r["sum"]["strictly"]),
                            _num(r["sum"]["mean_change"], True), _num(r["min"]["exploit"]),
                            _num(r["unflagged"]), _num(r["checker_wrong"]))))  # fmt: skip
    for group, verb in (("wrong", "at least as well as"), ("neutral", "better than")):
        parts = []
        for how in ("min", "sum"):
            g = result["summary"][group][how]
            worst = f"worst {g['worst']} {_num(g['worst_exploit'])}" if g["worst"] else "no case"
            parts.append(f"by {how} mean {_num(g['mean_exploit'])}, {worst}")
        lines.append(f"{group} transformations scoring {verb} the honest solution: " + "; ".join(parts))
    lines.append("x>= / x>: share of cases where the transformed solution's min (sum) of step scores is at least / "
                 "more than the honest one's; exploit (by min): x>= for a wrong transformation, x> for a neutral "
                 "one (a tie is honest); unflagged: share whose min is above the middle of the score range (no "
                 "step looks wrong); checker: share the built-in task's exact checker labels wrong")  # fmt: skip
    unscored = sum(r["unscored"] for r in result["transformations"].values())
    if unscored:
        lines.append(f"{unscored} cases left out: a step past the PRM's length limit (NaN score)")
    lines.append(f"cost: {c['seconds']:.1f} s ({c['seconds_loading']:.1f} s to load, {c['seconds_scoring']:.1f} s "
                 f"to score), {c['prm_calls']} PRM calls, {c['solutions_scored']} solutions, {c['steps_scored']} "
                 "steps")  # fmt: skip
    if out:
        lines.append(f"results: {out}")
    return "\n".join(lines)
