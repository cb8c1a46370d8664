"""The PRM commands of `purerl`: ``train-prm``, ``label-steps``, ``eval-prm``, ``probe-prm`` (docs/prm.md).

Argument parsing only (no torch at import, so a bad argument answers at once); each handler imports
the module that does the work.
"""

from __future__ import annotations

import argparse
import sys


def _quiet() -> None:
    from purerl.models.loading import quiet_transformers

    quiet_transformers()


def _train_prm(args: argparse.Namespace) -> str:
    from purerl.prmtools.train_prm_config import load_train_prm_config

    load_train_prm_config(args.config, args.overrides)  # a bad key or value answers before torch loads
    _quiet()
    from purerl.prmtools.train_prm import run_train_prm
    from purerl.training.run_control import RunStopped, StopSignals

    StopSignals.exit_after_stop = True  # this process ends with the run
    try:
        return run_train_prm(args.config, args.overrides, resume=args.resume, overwrite=args.overwrite)
    except RunStopped as stop:
        print(f"purerl train-prm: {stop}", file=sys.stderr)
        raise SystemExit(stop.code) from None


def _label_steps(args: argparse.Namespace) -> str:
    _quiet()
    from purerl.prmtools.labeling import run_label_steps

    return run_label_steps(args)


def _eval_prm(args: argparse.Namespace) -> str:
    _quiet()
    from purerl.prmtools.processbench import run_eval_prm

    return run_eval_prm(args)


def add_train_prm(sub) -> None:
    p = sub.add_parser(
        "train-prm",
        help="train a token-classification PRM on step-labelled data (PURE's two stages)",
        description="Train a PRM (2-label token classification, read at each step's separator token) from "
        "TRL's stepwise format or PRM800K, from any HF causal-LM or token-classification folder: stage 1 "
        "the head only, stage 2 all weights. Writes final/ for `purerl train prm.path=...` and `purerl bon`.",
    )
    p.add_argument("config", nargs="?", help="a YAML config (see configs/prm/); defaults when left out")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.path=steps.jsonl full.epochs=2")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in out_dir")
    p.set_defaults(run=_train_prm)


def add_label_steps(sub) -> None:
    p = sub.add_parser(
        "label-steps",
        help="label solution steps automatically (Math-Shepherd): complete each prefix k times, grade",
        description="For each step prefix of each solution, sample k completions from a policy and grade "
        "them against the gold answer: a step is correct if any completion reaches it (hard) or by the "
        "share that do (soft). Writes the stepwise format (prompt, completions, labels). Resumable.",
    )
    p.add_argument("file", help="problems with gold answers (JSONL / JSON / parquet / datasets folder)")
    p.add_argument("--out", required=True, help="stepwise JSONL to write (appended to when resuming)")
    policy_help = "the completing policy: folder, hub id, .gguf, known name, builtin, builtin:CONFIG.yaml"
    p.add_argument("--policy", required=True, help=policy_help)
    p.add_argument("--question", nargs="+", default=["question", "problem", "prompt"], help="question field spec(s)")
    p.add_argument("--gold", nargs="+", default=["answer", "gt", "final_answer", "last_boxed:solution"],
                   help="gold answer field spec(s)")  # fmt: skip
    p.add_argument("--responses", help="field of the solution(s) to label (a string or a list; overrides --solutions)")
    p.add_argument("--solutions", type=int, default=1, help="solutions sampled per problem without --responses")
    p.add_argument("--separator", default="\n\n", help="step separator of the solutions")
    p.add_argument("--k", type=int, default=8, help="completions per step prefix")
    p.add_argument("--mode", choices=["hard", "soft"], default="hard", help="hard: any completion; soft: share")
    p.add_argument("--stop-at-first-error", action=argparse.BooleanOptionalAction, default=True,
                   help="label the steps after the first wrong one wrong without sampling (default: on)")  # fmt: skip
    p.add_argument("--template", default="raw", help="prompt template of the policy (raw, chat, qwen_math_cot, ...)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64, help="prefix completions per generate call")
    p.add_argument("--limit", type=int, help="first N problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.set_defaults(run=_label_steps)


def add_eval_prm(sub) -> None:
    p = sub.add_parser(
        "eval-prm",
        help="ProcessBench-style PRM evaluation: first wrong step found, F1, step AUROC",
        description="Score labelled solutions with a PRM; its first step scored below a threshold is its "
        "guess of the first error. Reports accuracy on solutions with an error and on correct ones, their "
        "harmonic mean (F1), and step-level AUROC; the threshold is chosen on a validation split.",
    )
    p.add_argument("file", help="step-labelled solutions (stepwise or PRM800K layout)")
    p.add_argument("--prm", required=True, help="a PRM folder or hub id, or 'rule' (the built-in task's checker)")
    p.add_argument("--prm-kind", default="token_classification", help="token_classification, qwen_prm, math_shepherd")
    p.add_argument("--score-map", default="none", help="affine maps a [0, 1] PRM's scores to [-1, 1]")
    p.add_argument("--separator", default="\n", help="the PRM's step separator (token_classification)")
    p.add_argument("--format", default="auto", help="auto, stepwise or prm800k")
    p.add_argument("--neutral", default="correct", help="PRM800K rating 0: correct, wrong or drop")
    p.add_argument("--threshold", type=float, help="a fixed threshold (else chosen on the validation split)")
    p.add_argument("--val", help="a validation file (else --val-fraction of the file)")
    p.add_argument("--val-fraction", type=float, default=0.3, help="share held out to choose the threshold")
    p.add_argument("--limit", type=int, help="first N solutions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", help="write results.json here")
    p.set_defaults(run=_eval_prm)


def _probe_prm(args: argparse.Namespace) -> str:
    _quiet()
    from purerl.prmtools.probe import run_probe_prm

    return run_probe_prm(args)


def add_probe_prm(sub) -> None:
    p = sub.add_parser(
        "probe-prm",
        help="how a PRM can be gamed, before any RL: transformed solutions against honest ones",
        description="Score honest solutions and transformations a policy could learn (skip to the answer, "
        "collapse, drop or miscopy an operand, a confident wrong answer, filler, repeats, 'Thank you.', ...) "
        "with a PRM; per transformation, the share of problems where the transformed solution scores at "
        "least as well as the honest one, by min step score and by sum (docs/prm.md).",
    )
    p.add_argument("--prm", help="a PRM folder or hub id, or 'rule' (the built-in task's exact checker); "
                   "default: the shipped built-in PRM")  # fmt: skip
    p.add_argument("--prm-kind", default="token_classification", help="token_classification, qwen_prm, math_shepherd")
    p.add_argument("--score-map", default="none", help="affine maps a [0, 1] PRM's scores to [-1, 1]")
    p.add_argument("--separator", default="\n", help="the PRM's step separator (token_classification)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--data", help="solutions to probe instead of the built-in task's: JSONL / JSON / parquet / "
                   "datasets folder with a question, a gold answer and a reference solution per row")  # fmt: skip
    p.add_argument("--question", nargs="+", default=["question", "problem", "prompt"], help="question field spec(s)")
    p.add_argument("--gold", nargs="+", default=["answer", "final_answer", "gt", "last_boxed:solution"],
                   help="gold answer field spec(s)")  # fmt: skip
    p.add_argument("--solution", default="solution", help="field of the reference solution (--data)")
    p.add_argument("--step-separator", default="\n\n", help="what separates the steps of a --data solution")
    p.add_argument("--problems", type=int, default=256, help="problems to probe (--data: the first N usable rows)")
    p.add_argument("--transforms", help="comma-separated transformations to apply (default: all)")
    p.add_argument("--seed", type=int, default=0, help="draws the built-in problems and each transformation's choices")
    p.add_argument("--batch-size", type=int, default=64, help="solutions per PRM call")
    p.add_argument("--out", help="write the results (JSON) here")
    p.set_defaults(run=_probe_prm)


ADDERS = (add_train_prm, add_label_steps, add_eval_prm, add_probe_prm)
