"""The `purerl` command: parse arguments, call one function, print its result."""

from __future__ import annotations

import argparse
import logging
import sys

from purerl import __version__


def _credit(args: argparse.Namespace) -> str:
    from purerl.explain import EXAMPLE_GROUP, credit_table, parse_rewards

    if args.rewards:
        group = {f"response {k + 1}": parse_rewards(spec) for k, spec in enumerate(args.rewards)}
    else:
        group = EXAMPLE_GROUP
    return credit_table(group, temperature=args.temperature, tokens_per_step=args.tokens_per_step)


def _steps(args: argparse.Namespace) -> str:
    from purerl.explain import steps_report

    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise ValueError(f"cannot read {args.file}: {err.strerror}") from None
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return steps_report(text, args.separator, regex=args.regex, tokenizer=tokenizer)


def _train(args: argparse.Namespace) -> str:
    from purerl.config import load_config
    from purerl.report import summarize_run
    from purerl.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    Trainer(cfg, resume=args.resume).train()
    return summarize_run(cfg.run.out_dir)


def _prepare(args: argparse.Namespace) -> str:
    import json
    import shutil
    from pathlib import Path

    from purerl.builders import policy_path, prm_path
    from purerl.config import load_config
    from purerl.models import ASSETS

    cfg = load_config(args.config, args.overrides)
    policy = Path(policy_path(cfg, refresh=args.refresh))
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
    from purerl.compare import run_comparison

    return run_comparison(args.config, args.overrides, seeds=args.seeds, out_dir=args.out, arms=args.arms)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purerl",
        description="Process-supervised RL for reasoning LMs with PURE min-form credit assignment.",
    )
    parser.add_argument("--version", action="version", version=f"purerl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    credit.add_argument("--temperature", type=float, default=0.1, help="soft_min temperature (paper: 0.1)")
    credit.add_argument("--tokens-per-step", type=int, default=10, help="tokens in each step of the example")
    credit.set_defaults(run=_credit)

    train = sub.add_parser(
        "train",
        help="train a policy with PURE (default: the built-in arithmetic task on a CPU)",
        description="Train with PURE. With no arguments: the built-in task, its warm-started tiny "
        "policy and learned PRM (trained once and cached), PRM+VR rewards, min-form credit.",
    )
    train.add_argument("config", nargs="?", help="a YAML config (see configs/); defaults when left out")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algo.mode=sum run.steps=50")
    train.add_argument("--resume", action="store_true", help="continue from run.out_dir/checkpoint")
    train.set_defaults(run=_train)

    prepare = sub.add_parser("prepare", help="build the built-in warm-started policy and PRM for a config (cached)")
    prepare.add_argument("config", nargs="?", help="a YAML config; defaults when left out")
    prepare.add_argument("overrides", nargs="*", help="key=value overrides")
    prepare.add_argument("--refresh", action="store_true", help="retrain even if a cached or shipped copy exists")
    prepare.add_argument("--ship", action="store_true", help="copy the results into purerl/assets (developers)")
    prepare.set_defaults(run=_prepare)

    compare = sub.add_parser(
        "compare",
        help="sum-form vs min-form vs VR-only on the same budget and seeds (PURE Figure 2 in miniature)",
    )
    compare.add_argument("config", nargs="?", help="a YAML config every arm starts from")
    compare.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    compare.add_argument("--out", default="runs/compare", help="folder of the arms' runs, the plot and table")
    compare.add_argument("--arms", nargs="+", default=None, help="arms to run (default: sum min vr min+vr)")
    compare.set_defaults(run=_compare)

    steps = sub.add_parser("steps", help="split a response into steps (and locate their last tokens)")
    steps.add_argument("file", help="text file holding one response, or - for standard input")
    steps.add_argument("--separator", default="\n\n", help="step separator (default: a blank line)")
    steps.add_argument("--regex", action="store_true", help="treat --separator as a regular expression")
    steps.add_argument("--tokenizer", help="a tokenizer folder or hub id; shows each step's last token")
    steps.set_defaults(run=_steps)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) and "=" in args.config:  # `purerl train run.steps=5`: no file
        args.overrides, args.config = [args.config, *args.overrides], None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.command is None:
        parser.print_help()
        return 2
    try:
        print(args.run(args))
    except ValueError as err:
        print(f"purerl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `purerl credit | head`: the reader left; not an error of ours
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
