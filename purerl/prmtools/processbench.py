"""ProcessBench-style evaluation of a PRM (Zheng et al. 2024, arXiv 2412.06559): ``purerl eval-prm``.

Each solution has step scores ``s_0..s_{n-1}`` from the PRM and a label, its first wrong step ``e``
(:meth:`~purerl.prmtools.stepdata.StepExample.first_error`, -1: the solution is correct).

- **Guess** at threshold ``t``: the first step with ``s_k < t`` (strictly below), -1 if none. A NaN
  score (a step past the PRM's length limit) is never below the threshold: counted, not guessed.
- **Error accuracy**: the share of solutions with an error whose guess is exactly ``e``; **correct
  accuracy**: the share of correct solutions with guess -1; **F1**: their harmonic mean ``2ab / (a + b)``
  (0 when both are 0), ProcessBench's headline number. A part without one kind of solution has None
  for that accuracy and for F1.
- **AUROC** (step level): every labelled step's score as a detector of correct steps, ``P(s_correct >
  s_wrong) + P(tie) / 2`` over all (correct, wrong) step pairs, from ranks with ties averaged
  (Mann-Whitney U); NaN scores are left out; None without both kinds of step.
- **Threshold**: ``--threshold``, else the one that maximises F1 on the validation part (``--val FILE``,
  else a ``--val-fraction`` of the file drawn by ``--seed``, stratified by having an error, so that
  both kinds of solution land in it). Candidates: the midpoints between consecutive distinct scores of
  the validation part, plus one below the lowest and one above the highest (each score -/+ 1: flag
  nothing / every scored step). Among equally good candidates the one closest to the natural threshold
  wins (then the lower). F1 as a function of ``t`` is computed for all candidates at once: a solution
  is right exactly for ``t`` in an interval (correct: ``t <= min s``; error at ``e``: ``s_e < t <=
  min_{k<e} s_k``), so each adds 1 to a range of the sorted candidates.
- **Natural threshold**: the middle of the PRM's score range (0 for [-1, 1] scores, 0.5 for [0, 1]),
  reported beside the chosen one for reference.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path

from purerl.algo.stats import auroc, average_ranks  # noqa: F401 (eval-prm's rank statistics, re-exported)
from purerl.io.data import DataError
from purerl.io.responses import check_out_path, write_text
from purerl.prmtools.stepdata import FORMATS, NEUTRAL, StepDataConfig, StepExample, load_step_examples

SCORE_MAPS = ("none", "affine")


def first_error_guess(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scored below ``threshold`` (-1: none; a NaN is never below).

    >>> first_error_guess([0.9, float("nan"), -0.3, -0.8], 0.0), first_error_guess([0.9, 0.2], 0.0)
    (2, -1)
    """
    return next((k for k, s in enumerate(scores) if s < threshold), -1)


def first_error(labels: Sequence[bool]) -> int:
    """Index of the first wrong step (-1: none)."""
    return next((k for k, ok in enumerate(labels) if not ok), -1)


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """``2ab / (a + b)``, 0 when both are 0, None when either is None.

    >>> harmonic_mean(0.5, 1.0), harmonic_mean(0.0, 0.0), harmonic_mean(None, 1.0)
    (0.6666666666666666, 0.0, None)
    """
    if a is None or b is None:
        return None
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def processbench_metrics(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], threshold: float) -> dict:
    """The ProcessBench numbers of solutions with step ``scores`` and step ``labels`` at ``threshold``
    (see the module doc): accuracies, F1, AUROC and the counts behind them."""
    errors = found = correct = kept = 0
    for s, lab in zip(scores, labels):
        label, guess = first_error(lab), first_error_guess(s, threshold)
        errors += label >= 0
        found += label >= 0 and guess == label
        correct += label < 0
        kept += label < 0 and guess < 0
    acc_err = found / errors if errors else None
    acc_ok = kept / correct if correct else None
    flat = [(x, ok) for s, lab in zip(scores, labels) for x, ok in zip(s, lab)]
    return {
        "solutions": len(scores), "with_error": errors, "correct": correct, "error_found": found,
        "correct_kept": kept, "error_accuracy": acc_err, "correct_accuracy": acc_ok,
        "f1": harmonic_mean(acc_err, acc_ok), "auroc": auroc([x for x, _ in flat], [ok for _, ok in flat]),
        "steps": len(flat), "nan_steps": sum(math.isnan(x) for x, _ in flat),
        "solutions_with_nan": sum(any(math.isnan(x) for x in s) for s in scores),
    }  # fmt: skip


def candidate_thresholds(scores: Sequence[Sequence[float]]) -> list[float]:
    """Midpoints between consecutive distinct finite scores, plus the lowest - 1 and the highest + 1.

    >>> candidate_thresholds([[0.2, 0.8], [0.2, float("nan")]])
    [-0.8, 0.5, 1.8]
    """
    distinct = sorted({x for s in scores for x in s if math.isfinite(x)})
    if not distinct:
        return [0.0]
    mids = [(a + b) / 2 for a, b in zip(distinct, distinct[1:])]
    return [distinct[0] - 1.0, *mids, distinct[-1] + 1.0]


def _right_interval(scores: Sequence[float], label: int) -> tuple[float, float] | None:
    """``(lo, hi)``: the guess is ``label`` exactly for thresholds in ``(lo, hi]`` (None: for none)."""
    known = [x for x in (scores[:label] if label >= 0 else scores) if not math.isnan(x)]
    hi = min(known, default=math.inf)
    if label < 0:
        return -math.inf, hi
    lo = scores[label]
    return None if math.isnan(lo) or lo >= hi else (lo, hi)


def f1_by_threshold(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]],
                    candidates: Sequence[float]) -> list[float | None]:  # fmt: skip
    """F1 at each of the sorted ``candidates``, all at once (equal to :func:`processbench_metrics`'s)."""
    hits = {True: [0] * (len(candidates) + 1), False: [0] * (len(candidates) + 1)}
    totals = {True: 0, False: 0}
    for s, lab in zip(scores, labels):
        label = first_error(lab)
        totals[label >= 0] += 1
        interval = _right_interval(s, label)
        if interval is not None:
            diff = hits[label >= 0]
            diff[bisect_right(candidates, interval[0])] += 1
            diff[bisect_right(candidates, interval[1])] -= 1
    out, run_err, run_ok = [], 0, 0
    for i in range(len(candidates)):
        run_err, run_ok = run_err + hits[True][i], run_ok + hits[False][i]
        acc_err = run_err / totals[True] if totals[True] else None
        out.append(harmonic_mean(acc_err, run_ok / totals[False] if totals[False] else None))
    return out


def choose_threshold(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]],
                     natural: float) -> tuple[float, float]:  # fmt: skip
    """``(threshold, F1)``: the candidate of best F1 on these solutions, ties to the one closest to
    ``natural`` (then the lower). They must hold solutions with and without an error."""
    candidates = candidate_thresholds(scores)
    f1 = f1_by_threshold(scores, labels, candidates)
    if any(v is None for v in f1):
        raise ValueError("choosing a threshold needs solutions with an error and correct ones")
    best = max(range(len(candidates)), key=lambda i: (f1[i], -abs(candidates[i] - natural), -candidates[i]))
    return candidates[best], f1[best]


def split_examples(examples: Sequence[StepExample], fraction: float, seed: int) -> tuple[list, list]:
    """``(test, validation)``: ``fraction`` of the solutions with an error and of the correct ones
    (rounded) drawn by ``seed`` for validation, the rest for test, each in file order."""
    rng = random.Random(seed)
    chosen: set[int] = set()
    for has_error in (True, False):
        idx = [i for i, ex in enumerate(examples) if (ex.first_error() >= 0) == has_error]
        rng.shuffle(idx)
        chosen.update(idx[: int(fraction * len(idx) + 0.5)])
    return ([ex for i, ex in enumerate(examples) if i not in chosen],
            [ex for i, ex in enumerate(examples) if i in chosen])  # fmt: skip


def check_args(args: argparse.Namespace) -> None:
    """Refuse a bad argument before anything loads (one line naming the flag)."""
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    for flag, value, least in (("--batch-size", args.batch_size, 1), ("--limit", args.limit, 1),
                               ("--threads", args.threads, 0)):  # fmt: skip
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a finite number, got {args.threshold}")
    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r}: choose one of {', '.join(FORMATS)}")
    if args.neutral not in NEUTRAL:
        raise ValueError(f"--neutral {args.neutral!r}: choose one of {', '.join(NEUTRAL)}")
    for flag, path in (("file", args.file), ("--val", args.val)):
        if path and not path.startswith("hf:") and not Path(path).exists():
            raise ValueError(f"{flag} {path}: no such file or folder")
    check_out_path(args.out, args.file)
    check_out_path(args.out, args.val)
    if args.prm != "rule":
        check_model_prm(args)


def check_model_prm(args: argparse.Namespace) -> None:
    from purerl.config.validation import check_device, check_model_path
    from purerl.models.loading import torch_dtype_of
    from purerl.registry import PRMS

    check_model_path("--prm", args.prm)
    try:
        cls = PRMS.resolve(args.prm_kind)
    except ValueError as err:
        raise ValueError(f"--prm-kind: {err}") from None
    if not hasattr(cls, "load"):
        raise ValueError(f"--prm-kind {args.prm_kind!r} has no model to load (the rule checker is --prm rule)")
    if args.score_map not in SCORE_MAPS:
        raise ValueError(f"--score-map {args.score_map!r}: choose one of {', '.join(SCORE_MAPS)}")
    if not args.separator:
        raise ValueError("--separator must not be empty")
    check_device("--device", args.device)
    torch_dtype_of(args.dtype)


FLAG_NAMES = {"prm.kind": "--prm-kind", "prm.path": "--prm", "prm.score_map": "--score-map", "prm.dtype": "--dtype"}
"""The flags of ``eval-prm`` and ``bon`` that set each ``prm.*`` key, named in the loader's errors."""


def load_scorer(args: argparse.Namespace):
    """The PRM of ``--prm`` through the one loader (:func:`purerl.prm.loading.load_prm`), as every route
    loads it."""
    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm
    from purerl.tasks.arithmetic import ArithmeticTask

    if args.prm == "rule":
        return load_prm(PRMConfig(kind="rule"), ArithmeticTask)
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()  # as the other model-loading commands
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = PRMConfig(kind=args.prm_kind, path=args.prm, dtype=args.dtype, device=args.device,
                     score_map=args.score_map, separator=args.separator)  # fmt: skip
    return load_prm(spec, names=FLAG_NAMES)


def _check_rule_prompts(examples: Sequence[StepExample], files: Sequence[str]) -> None:
    from purerl.tasks.arithmetic import parse_prompt

    for ex, file in zip(examples, files):
        try:
            parse_prompt(ex.prompt)
        except ValueError:
            raise DataError(f"{file}, row {ex.row}: --prm rule checks the built-in arithmetic task's steps, "
                            f"but the prompt is not one of its problems") from None  # fmt: skip


def score_examples(scorer, examples: Sequence[StepExample], files: Sequence[str], batch_size: int) -> list:
    """The PRM's step scores of each example, ``batch_size`` solutions per call, with a progress bar."""
    from tqdm import tqdm

    out: list[list[float]] = []
    with tqdm(total=len(examples), desc="purerl eval-prm", disable=None, dynamic_ncols=True) as bar:
        for start in range(0, len(examples), batch_size):
            batch, where = examples[start : start + batch_size], files[start : start + batch_size]
            try:
                scores = scorer.score([ex.prompt for ex in batch], [ex.steps for ex in batch])
            except ValueError as err:
                raise ValueError(f"{where[0]}, rows {batch[0].row}-{batch[-1].row}: the PRM failed: {err}") from None
            for ex, file, s in zip(batch, where, scores):
                if len(s) != len(ex.steps):
                    raise ValueError(f"{file}, row {ex.row}: the PRM gave {len(s)} scores for {len(ex.steps)} steps")
                out.append([float(x) for x in s])
            bar.update(len(batch))
    return out


def _load(path: str, args: argparse.Namespace):
    cfg = StepDataConfig(path=path, format=args.format, neutral=args.neutral, limit=args.limit)
    loaded = load_step_examples(cfg)
    if not loaded.examples:
        raise DataError(f"{path}: no labelled solution to evaluate (skipped: {loaded.skipped or 'none'})")
    return loaded


def _parts(args: argparse.Namespace) -> tuple[list, list, dict]:
    """``(test, validation, skipped)`` examples: the file and ``--val``, or a split of the file."""
    main = _load(args.file, args)
    skipped = {args.file: main.skipped}
    if args.val:
        val = _load(args.val, args)
        skipped[args.val] = val.skipped
        return main.examples, val.examples, skipped
    if args.threshold is not None:
        return main.examples, [], skipped
    test, val = split_examples(main.examples, args.val_fraction, args.seed)
    if not test or not val:
        raise ValueError(f"{args.file}: {len(main.examples)} solution(s) are too few to hold out "
                         f"--val-fraction {args.val_fraction}; pass --threshold or --val")  # fmt: skip
    return test, val, skipped


def _threshold(args: argparse.Namespace, scores: list, labels: list, natural: float) -> tuple[float, str]:
    """``(threshold, where it came from)``: ``--threshold``, else the best F1 on the validation part."""
    if args.threshold is not None:
        return args.threshold, "--threshold"
    try:
        threshold, _ = choose_threshold(scores, labels, natural)
    except ValueError as err:
        raise ValueError(f"{args.val or args.file}: the validation part: {err} (pass --threshold)") from None
    if args.val:
        return threshold, f"the best F1 on --val {args.val}"
    return threshold, f"the best F1 on the validation split (--val-fraction {args.val_fraction}, --seed {args.seed})"


def run_eval_prm(args: argparse.Namespace) -> str:
    """``purerl eval-prm``: score the labelled solutions with the PRM, choose or take the threshold,
    report (and with ``--out`` write) the ProcessBench numbers of both parts; see the module doc."""
    check_args(args)
    test, val, skipped = _parts(args)
    files = [args.file] * len(test) + [args.val or args.file] * len(val)
    if args.prm == "rule":
        _check_rule_prompts(test + val, files)
    scorer = load_scorer(args)
    scores = score_examples(scorer, test + val, files, args.batch_size)
    parts = {"test": (scores[: len(test)], [ex.labels for ex in test])}
    if val:
        parts["validation"] = (scores[len(test) :], [ex.labels for ex in val])
    lo, hi = scorer.score_range
    natural = (lo + hi) / 2
    threshold, source = _threshold(args, *parts.get("validation", ([], [])), natural)
    kind = "rule" if args.prm == "rule" else args.prm_kind
    result = {
        "file": args.file, "val": args.val, "prm": args.prm, "prm_kind": kind, "threshold": threshold,
        "threshold_from": source, "natural_threshold": natural, "score_range": [lo, hi], "validation": None,
        **{name: processbench_metrics(s, lab, threshold) for name, (s, lab) in parts.items()},
        "natural": {name: processbench_metrics(s, lab, natural) for name, (s, lab) in parts.items()},
        "skipped": skipped, "prm_truncated_inputs": getattr(scorer, "truncated", 0),
    }  # fmt: skip
    if args.out:
        write_text(args.out, json.dumps(result, indent=2))
    return format_summary(result, args.out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_summary(result: dict, out: str | None = None) -> str:
    """The printed report of :func:`run_eval_prm`: a line of context, then a table row per part and threshold."""
    parts = [p for p in ("test", "validation") if result.get(p)]
    sizes = ", ".join(f"{result[p]['solutions']} {p}" for p in parts)
    lines = [f"eval-prm {result['file']}: {sizes} solutions; PRM {result['prm']} ({result['prm_kind']})"]
    for file, why in result["skipped"].items():
        if why:
            lines.append(f"skipped in {file}: " + ", ".join(f"{n} ({reason})" for reason, n in why.items()))
    lines.append(f"threshold {result['threshold']:.4g}: {result['threshold_from']}; natural threshold "
                 f"{result['natural_threshold']:.4g} (middle of the score range {result['score_range']})")  # fmt: skip
    head = ("part", "threshold", "solutions", "w/ error", "correct", "acc error", "acc correct", "F1", "AUROC")
    widths = (22, 11, 11, 10, 9, 11, 13, 8, 8)
    lines.append("".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for p in parts:
        for label, m, t in ((p, result[p], result["threshold"]),
                            (f"{p} (natural)", result["natural"][p], result["natural_threshold"])):  # fmt: skip
            cells = (label, f"{t:.4g}", m["solutions"], m["with_error"], m["correct"], _num(m["error_accuracy"]),
                     _num(m["correct_accuracy"]), _num(m["f1"]), _num(m["auroc"]))  # fmt: skip
            lines.append("".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))))  # fmt: skip
    nan = sum(result[p]["nan_steps"] for p in parts)
    if nan:
        steps = sum(result[p]["steps"] for p in parts)
        lines.append(f"{nan} of {steps} steps have no score (NaN: past the PRM's length limit): never below the "
                     f"threshold, left out of AUROC")  # fmt: skip
    lines.append("F1: harmonic mean of the accuracy on solutions with an error (first wrong step found exactly) "
                 "and on correct ones (no step flagged)")  # fmt: skip
    if out:
        lines.append(f"results: {out}")
    return "\n".join(lines)
