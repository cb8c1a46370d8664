"""How well `purerl label-steps` (Math-Shepherd labels) agrees with the built-in task's exact step labels.

N training problems of the built-in task (default config); the built-in policy samples one solution
each and completes every step prefix k times (`purerl label-steps`, no --responses); each step's label
is then compared with the exact checker's (`arithmetic.rule_checker`). Two views:

- all steps: the exact labels are *local* (a step that carries on correctly from an earlier mistake is
  correct), Math-Shepherd's say whether the gold answer is still reachable, so after a first error
  they differ by design;
- up to the first error (ProcessBench's view): steps up to and including the exact first wrong step
  (all steps of a solution without one), and how often the first wrong step itself is found.

"wrong" is the positive class of precision / recall. Writes, beside ``--out`` (a JSON of the numbers):
``problems.jsonl``, ``labelled.jsonl`` (label-steps' stepwise rows) and ``exact.jsonl`` (the same
solutions with exact labels), for training a PRM on the first and evaluating it against the second.

    python benchmarks/label_steps_builtin.py [--n 64] [--k 8] [--mode hard] [--out runs/label_steps_builtin/result.json]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from purerl.commands.cli import build_parser
from purerl.config import load_config
from purerl.models.builtin import builtin_policy_path
from purerl.prmtools.labeling import run_label_steps, side_paths
from purerl.tasks import arithmetic as A


def first_wrong(labels: list) -> int:
    return next((j for j, ok in enumerate(labels) if not ok), -1)


def precision_recall(pairs: list[tuple[bool, bool]]) -> tuple[float | None, float | None]:
    """Precision and recall of "wrong" over ``(label, exact)`` pairs (None: nothing to divide by)."""
    hits = sum(not got and not want for got, want in pairs)
    flagged, wrong = sum(not got for got, _ in pairs), sum(not want for _, want in pairs)
    return (hits / flagged if flagged else None), (hits / wrong if wrong else None)


def compare(rows: list[dict]) -> dict:
    """Agreement of label-steps' labels (soft: share >= 0.5) with the exact ones, in both views."""
    every, head, found = [], [], 0
    for r in rows:
        got = [bool(x) if isinstance(x, bool) else x >= 0.5 for x in r["labels"]]
        want = A.rule_checker(r["prompt"], r["completions"])
        r["exact"] = want
        every += list(zip(got, want))
        stop = first_wrong(want)
        head += list(zip(got, want))[: stop + 1 if stop >= 0 else None]
        found += first_wrong(got) == stop
    out = {"solutions": len(rows), "steps": len(every)}
    for name, pairs in (("all", every), ("to_first_error", head)):
        precision, recall = precision_recall(pairs)
        out[name] = {"steps": len(pairs), "agreement": sum(g == w for g, w in pairs) / max(len(pairs), 1),
                     "wrong_precision": precision, "wrong_recall": recall,
                     "exact_wrong_share": sum(not w for _, w in pairs) / max(len(pairs), 1)}  # fmt: skip
    out["first_error_found"] = found / max(len(rows), 1)
    return out


def cost(summary: str) -> dict:
    m = re.search(r"cost: (\d+) completions and (\d+) solutions sampled, (\d+) tokens, ([\d.]+) s", summary)
    saved = re.search(r"(\d+) completions not needed", summary)
    return {"completions": int(m.group(1)), "solutions_sampled": int(m.group(2)), "tokens": int(m.group(3)),
            "seconds_labelling": float(m.group(4)),
            "completions_saved": int(saved.group(1) if saved else 0)}  # fmt: skip


def table(result: dict) -> str:
    def fmt(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = [f"label-steps on the built-in task: {result['solutions']} solutions sampled by the built-in policy, "
             f"k={result['k']}, mode={result['mode']}",
             f"{'view':<16} {'steps':>6} {'agree':>6} {'P(wrong)':>9} {'R(wrong)':>9} {'exact wrong':>12}"]  # fmt: skip
    for view in ("all", "to_first_error"):
        v = result[view]
        lines.append(f"{view:<16} {v['steps']:>6} {fmt(v['agreement']):>6} {fmt(v['wrong_precision']):>9} "
                     f"{fmt(v['wrong_recall']):>9} {fmt(v['exact_wrong_share']):>12}")  # fmt: skip
    c = result["cost"]
    lines.append(f"first wrong step found exactly: {fmt(result['first_error_found'])}")
    lines.append(f"cost: {c['completions']} completions (+{c['solutions_sampled']} solutions), {c['tokens']} tokens, "
                 f"{c['seconds_labelling']:.1f} s labelling, {result['seconds']:.1f} s in all; "
                 f"stop-at-first-error saved {c['completions_saved']} completions")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="problems (one sampled solution each)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--mode", choices=["hard", "soft"], default="hard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="runs/label_steps_builtin/result.json")
    a = ap.parse_args()
    cfg = load_config(None)
    folder = Path(a.out).parent
    folder.mkdir(parents=True, exist_ok=True)
    problems, labelled, exact = folder / "problems.jsonl", folder / "labelled.jsonl", folder / "exact.jsonl"
    with problems.open("w", encoding="utf-8") as f:
        for p in A.generate_problems(cfg.task, a.n, "train", a.seed):
            f.write(json.dumps({"question": p.prompt, "answer": p.answer}) + "\n")
    for old in (labelled, *side_paths(labelled)):  # a benchmark measures a whole run
        old.unlink(missing_ok=True)
    start = time.time()
    args = build_parser().parse_args(["label-steps", str(problems), "--out", str(labelled), "--policy", "builtin",
                                      "--k", str(a.k), "--mode", a.mode, "--seed", str(a.seed), "--batch-size",
                                      str(a.batch_size), "--max-new-tokens", str(cfg.rollout.max_new_tokens),
                                      "--threads", str(a.threads), "--device", a.device])  # fmt: skip
    summary = run_label_steps(args)
    seconds = time.time() - start
    rows = [json.loads(line) for line in labelled.read_text(encoding="utf-8").splitlines()]
    result = {"policy": builtin_policy_path(cfg), "n": a.n, "k": a.k, "mode": a.mode, "seed": a.seed,
              "max_new_tokens": cfg.rollout.max_new_tokens, **compare(rows), "cost": cost(summary),
              "seconds": seconds}  # fmt: skip
    with exact.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["prompt"], "completions": r["completions"], "labels": r["exact"],
                                "row": r["row"], "solution": r["solution"]}) + "\n")  # fmt: skip
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(summary)
    print(table(result))
    print(f"wrote {a.out}, {labelled} and {exact}")


if __name__ == "__main__":
    main()
