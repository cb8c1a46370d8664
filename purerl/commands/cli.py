"""The `purerl` command: parse arguments, call one function, print its result."""

from __future__ import annotations

import argparse
import logging
import sys

from purerl import __version__
from purerl.commands.failures import EXIT_INTERRUPTED, EXIT_USAGE, report_failure
from purerl.commands.monitor import add_monitor
from purerl.commands.prm_tools import ADDERS
from purerl.config.validation import check_model_path
from purerl.io.responses import GOLD_FIELDS
from purerl.models.loading import quiet_transformers
from purerl.registry import DEFAULT_TEMPERATURE


def _credit(args: argparse.Namespace) -> str:
    from purerl.commands.explain import EXAMPLE_GROUP, credit_table, parse_rewards

    if args.rewards:
        group = {f"response {k + 1}": parse_rewards(spec) for k, spec in enumerate(args.rewards)}
    else:
        group = EXAMPLE_GROUP
    return credit_table(group, temperature=args.temperature, tokens_per_step=args.tokens_per_step)


def _steps(args: argparse.Namespace) -> str:
    from purerl.commands.explain import steps_report

    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise ValueError(f"cannot read {args.file}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{args.file}: not UTF-8 text (byte {err.start})") from None
    tokenizer = None
    if args.tokenizer:
        check_model_path("--tokenizer", args.tokenizer, what="tokenizer")
        quiet_transformers()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return steps_report(text, args.separator, regex=args.regex, tokenizer=tokenizer)


def _train(args: argparse.Namespace) -> str:
    from purerl.config import load_config

    moved = [a for a in args.allow_change if "=" in a]  # `--allow-change algo.lr algo.lr=0.5`: an override
    args.allow_change, args.overrides = [a for a in args.allow_change if "=" not in a], [*args.overrides, *moved]
    cfg = load_config(args.config, args.overrides)  # first: a bad key or value answers before torch loads
    quiet_transformers()
    from purerl.commands.report import summarize_run
    from purerl.training.run_control import RunStopped, StopSignals
    from purerl.training.trainer import Trainer

    StopSignals.exit_after_stop = True  # this process ends with the run
    try:
        Trainer(cfg, resume=args.resume, overwrite=args.overwrite, allow_change=args.allow_change,
                resume_from=args.resume_from).train()  # fmt: skip
    except RunStopped as stop:  # a signal, a guard or a non-finite loss: one line, a conventional code
        print(f"purerl train: {stop}", file=sys.stderr)
        raise SystemExit(stop.code) from None
    return summarize_run(cfg.run.out_dir)


def _prepare(args: argparse.Namespace) -> str:
    import json
    import shutil
    from pathlib import Path

    from purerl.config import load_config

    cfg = load_config(args.config, args.overrides)  # before torch loads, as in _train
    quiet_transformers()
    from purerl.models.builtin import builtin_policy_path, prm_path
    from purerl.models.loading import ASSETS

    policy = Path(builtin_policy_path(cfg, refresh=args.refresh))
    prm = Path(prm_path(cfg, refresh=args.refresh, policy=str(policy)))
    lines = [f"policy: {policy}", f"prm:    {prm}"]
    for folder in (policy, prm):
        for meta in folder.glob("purerl_*.json"):
            lines.append(f"{meta.name}: {json.dumps(json.loads(meta.read_text()))}")
        if args.ship:
            target = ASSETS / folder.name
            if target.resolve() != folder.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder, target)
                lines.append(f"shipped: {target}")
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> str:
    from purerl.config import load_config

    load_config(args.config, args.overrides)  # checked before torch loads; run_comparison loads it again
    quiet_transformers()
    from purerl.commands.compare import run_comparison

    return run_comparison(args.config, args.overrides, seeds=args.seeds, out_dir=args.out, arms=args.arms)


def _response_rows(args: argparse.Namespace):
    """The rows of ``args.file`` for `grade` and `bon`; with ``bon --policy`` their responses are sampled now."""
    from purerl.io.responses import check_out_path, read_response_rows, sample_responses

    check_out_path(args.out, args.file)  # before any sampling
    sample = None
    if getattr(args, "policy", None):
        quiet_transformers()

        def sample(questions: list[str]) -> list[list[str]]:
            return sample_responses(args.policy, questions, args.template, args.samples, args.max_new_tokens,
                                    args.temperature, args.seed)  # fmt: skip

    return read_response_rows(args.file, args.responses, args.gold, args.labels, getattr(args, "limit", None),
                              sample=sample)  # fmt: skip


def _grade(args: argparse.Namespace) -> str:
    from purerl.io.responses import grade_report

    return grade_report(_response_rows(args), args.file, args.extract, args.timeout, args.labels, args.out)


def _bon(args: argparse.Namespace) -> str:
    from purerl.commands.bon import bon_report

    check_model_path("--prm", args.prm)
    check_model_path("--policy", args.policy)
    if args.policy:
        for flag, value in {"--samples": args.samples, "--max-new-tokens": args.max_new_tokens}.items():
            if value < 1:
                raise ValueError(f"{flag} must be >= 1 with --policy, got {value}")
        if not args.temperature > 0:
            raise ValueError(f"--temperature must be > 0 to sample with --policy, got {args.temperature}")
    rows = _response_rows(args)
    if args.prm:
        quiet_transformers()
    return bon_report(rows, args.file, outcome_field=args.outcome, prm=args.prm, prm_kind=args.prm_kind,
                      score_map=args.score_map, separator=args.separator, out=args.out)  # fmt: skip


def _eval(args: argparse.Namespace) -> str:
    from purerl.commands.evaluate import EvalConfig, check_eval, run_eval, with_protocol

    cfg = EvalConfig(policy=args.policy, dtype=args.dtype, device=args.device,
                     benchmarks=args.benchmarks or ["math500"], limit=args.limit, template=args.template,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, greedy=not args.no_greedy,
                     samples=args.samples, temperature=args.temperature, seed=args.seed, out=args.out,
                     threads=args.threads, overwrite=args.overwrite)  # fmt: skip
    if args.protocol:  # a named protocol's settings win over the flags it sets (docs/fidelity.md)
        cfg = with_protocol(cfg, args.protocol, benchmarks_given=args.benchmarks is not None)
    if args.data_dir:
        cfg.data_dir = args.data_dir
    check_eval(cfg)  # before transformers loads: a bad flag answers at once
    quiet_transformers()
    return run_eval(cfg)


def _add_credit(sub) -> None:
    credit = sub.add_parser(
        "credit",
        help="show how sum / soft_min / min credit values a group of responses",
        description="Show the process returns and advantages each credit mode gives a group of "
        "responses to one prompt. With no --rewards, a built-in example: a correct answer, one "
        "with a wrong step, and one that only restates (the sum-form hack).",
    )
    credit.add_argument(
        "--rewards",
        action="append",
        metavar="R1,R2,...",
        help="PRM step scores of one response, comma-separated; repeat for each response of the group",
    )
    credit.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help="soft_min temperature (the paper's)"
    )
    credit.add_argument("--tokens-per-step", type=int, default=10, help="tokens in each step of the example")
    credit.set_defaults(run=_credit)


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a policy with PURE (default: the built-in arithmetic task on a CPU)",
        description="Train with PURE. With no arguments: the built-in task, its warm-started tiny "
        "policy and learned PRM (trained once and cached), PRM+VR rewards, the paper's soft-min credit "
        "(T = 0.1), whitened advantages, KL in the reward.",
    )
    train.add_argument("config", nargs="?", help="a YAML config (see configs/); defaults when left out")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algo.mode=sum run.steps=50")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this checkpoint folder")
    train.add_argument("--overwrite", action="store_true", help="replace a previous run in run.out_dir")
    train.add_argument(
        "--allow-change",
        nargs="+",
        default=[],
        metavar="KEY",
        help="with --resume: config keys or sections (e.g. algo.lr, algo) that may differ from the checkpoint's",
    )
    train.set_defaults(run=_train)


def _add_prepare(sub) -> None:
    prepare = sub.add_parser("prepare", help="build the built-in warm-started policy and PRM for a config (cached)")
    prepare.add_argument("config", nargs="?", help="a YAML config; defaults when left out")
    prepare.add_argument("overrides", nargs="*", help="key=value overrides")
    prepare.add_argument("--refresh", action="store_true", help="retrain even if a cached or shipped copy exists")
    prepare.add_argument("--ship", action="store_true", help="copy the results into purerl/assets (developers)")
    prepare.set_defaults(run=_prepare)


def _add_compare(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="sum-form vs min-form vs VR-only on the same budget and seeds (PURE Figure 2 in miniature)",
    )
    compare.add_argument("config", nargs="?", help="a YAML config every arm starts from")
    compare.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    compare.add_argument("--out", default="runs/compare", help="folder of the arms' runs, the plot and table")
    compare.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help="arms (default: sum min vr min+vr); e.g. min soft_min:T=0.01 soft_min:T=1.0, or one arms.yaml",
    )
    compare.set_defaults(run=_compare)


def _add_responses_file(p: argparse.ArgumentParser, what: str) -> None:
    """The arguments `grade` and `bon` share: a responses file and its fields."""
    p.add_argument("file", help=f"a JSONL (or JSON / parquet) of {what}")
    p.add_argument("--responses", default="response", help="field of the response(s): a string or a list")
    p.add_argument(
        "--gold",
        nargs="+",
        default=list(GOLD_FIELDS),
        help="field spec(s) of the gold answer, first present wins (last_boxed:FIELD allowed)",
    )
    p.add_argument("--labels", help="field of given grades (a bool or a list of bools) to compare or use")
    p.add_argument("--out", help="write the results here")


def _add_grade(sub) -> None:
    grade = sub.add_parser("grade", help="grade responses against gold answers (math-verify)")
    _add_responses_file(grade, "responses with gold answers")
    grade.add_argument("--extract", nargs="+", default=["boxed", "answer_is"], help="answer extractors, in order")
    grade.add_argument("--timeout", type=float, default=5.0, help="seconds one comparison may take")
    grade.set_defaults(run=_grade)


def _add_bon(sub) -> None:
    bon = sub.add_parser("bon", help="Best-of-N: accuracy of PRM / outcome-score / vote picks for N = 1, 2, 4, ...")
    _add_responses_file(bon, "questions, each with several sampled responses")
    bon.add_argument("--outcome", help="field of an outcome score per response (e.g. pred_score)")
    bon.add_argument("--prm", help="a PRM folder or hub id: rank by its step scores")
    bon.add_argument(
        "--prm-kind", default="token_classification", help="token_classification, qwen_prm or math_shepherd"
    )
    bon.add_argument("--score-map", default="none", help="affine maps a [0, 1] PRM's scores to [-1, 1]")
    bon.add_argument("--separator", default="\n\n", help="step separator of the responses")
    bon.add_argument("--policy", help="sample the responses now from this policy (folder, hub id, .gguf, name)")
    bon.add_argument("--samples", type=int, default=8, help="responses sampled per question with --policy")
    bon.add_argument("--template", default="chat", help="prompt template with --policy (chat, qwen_math_cot, ...)")
    bon.add_argument("--max-new-tokens", type=int, default=1024)
    bon.add_argument("--temperature", type=float, default=1.0)
    bon.add_argument("--seed", type=int, default=0)
    bon.add_argument("--limit", type=int, help="first N questions")
    bon.set_defaults(run=_bon)


def _add_eval(sub) -> None:
    ev = sub.add_parser("eval", help="greedy pass@1 and sampled avg@k / pass@k on math benchmarks")
    ev.add_argument("--policy", default="smollm2-135m-instruct", help="folder, hub id, .gguf file or known name")
    ev.add_argument("--benchmarks", nargs="+", default=None,
                    help="math500 minerva_math olympiadbench aime24 amc23, or files (default: math500)")  # fmt: skip
    ev.add_argument(
        "--protocol", choices=["pure"], help="pure: the PURE authors' evaluation settings (docs/fidelity.md)"
    )
    ev.add_argument("--data-dir", help="folder of <benchmark>.jsonl (default: ../shared/data/benchmarks)")
    ev.add_argument("--limit", type=int, help="first N problems of each benchmark")
    ev.add_argument("--template", default="chat", help="qwen_math_cot, chat, plain, raw or qwen25_math_cot_ft")
    ev.add_argument("--max-new-tokens", type=int, default=1024)
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--no-greedy", action="store_true", help="skip the greedy pass@1 run")
    ev.add_argument("--samples", type=int, default=0, help="sampled responses per problem (avg@k, pass@k)")
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--dtype", default="float32")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ev.add_argument("--out", default="runs/eval", help="folder of responses.jsonl, results.csv / .json")
    ev.add_argument("--overwrite", action="store_true",
                    help="delete --out's previous responses and results (a rerun otherwise resumes them, and "
                    "refuses other settings)")  # fmt: skip
    ev.set_defaults(run=_eval)


def _add_steps(sub) -> None:
    steps = sub.add_parser("steps", help="split a response into steps (and locate their last tokens)")
    steps.add_argument("file", help="text file holding one response, or - for standard input")
    steps.add_argument("--separator", default="\n\n", help="step separator (default: a blank line)")
    steps.add_argument("--regex", action="store_true", help="treat --separator as a regular expression")
    steps.add_argument("--tokenizer", help="a tokenizer folder or hub id; shows each step's last token")
    steps.set_defaults(run=_steps)


def build_parser() -> argparse.ArgumentParser:
    """The `purerl` argument parser: one subcommand per ``_add_<command>``, each with its handler as ``run``."""
    parser = argparse.ArgumentParser(
        prog="purerl",
        description="Process-supervised RL for reasoning LMs with PURE min-form credit assignment.",
    )
    parser.add_argument("--version", action="version", version=f"purerl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_credit, _add_train, _add_prepare, _add_compare, _add_grade, _add_bon, _add_eval, _add_steps,
                *ADDERS, add_monitor):  # fmt: skip
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `purerl` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Every failure is one line on standard error (no traceback unless ``PURERL_DEBUG=1``), with the
    status :data:`EXIT_USAGE` (2) for a bad argument, config value or path, :data:`EXIT_INTERNAL` (1)
    for an internal error, :data:`EXIT_INTERRUPTED` (130) for Ctrl-C. A ``SystemExit`` raised by a
    command (``purerl train`` stopping on a signal, with its own message and code) passes through.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # `purerl train --resume algo.lr=0.5`: overrides after a flag
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "config", None) and "=" in args.config:  # `purerl train run.steps=5`: no file
        args.overrides, args.config = [args.config, *args.overrides], None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        print(args.run(args))
    except BrokenPipeError:  # `purerl credit | head`: the reader left; not an error of ours
        sys.stderr.close()
    except KeyboardInterrupt:
        print(f"purerl {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # SystemExit is no Exception: it passes through
        return report_failure(args.command, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
