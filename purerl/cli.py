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

    from purerl.builders import builtin_policy_path, prm_path
    from purerl.config import load_config
    from purerl.models import ASSETS

    cfg = load_config(args.config, args.overrides)
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
    from purerl.compare import run_comparison

    return run_comparison(args.config, args.overrides, seeds=args.seeds, out_dir=args.out, arms=args.arms)


def _graded_rows(args: argparse.Namespace):
    """Rows of a responses JSONL with their responses (a list per row) and gold answers; with
    ``--policy`` the responses are sampled now (``--samples`` per question)."""
    from purerl.data import DataConfig, DataError, load_examples, read_rows

    rows = read_rows(args.file)
    examples = load_examples(DataConfig(path=args.file, answer=args.gold), require_answer=True)
    limit = getattr(args, "limit", None)
    rows, examples = rows[:limit] if limit else rows, examples[:limit] if limit else examples
    sampled = _sample_responses(args, examples) if getattr(args, "policy", None) else None
    out = []
    for n, (row, example) in enumerate(zip(rows, examples)):
        responses = sampled[n] if sampled else row.get(args.responses)
        if responses is None:
            raise DataError(f"{args.file} row {n}: no field {args.responses!r} (fields: {', '.join(row)})")
        responses = [responses] if isinstance(responses, str) else list(responses)
        labels = row.get(args.labels) if args.labels and not sampled else None
        if args.labels and labels is None and not sampled:
            raise DataError(f"{args.file} row {n}: no field {args.labels!r} (fields: {', '.join(row)})")
        labels = [labels] if isinstance(labels, bool) else labels
        if labels is not None and len(labels) != len(responses):
            raise DataError(f"{args.file} row {n}: {len(labels)} labels for {len(responses)} responses")
        out.append((row, example, responses, labels))
    return out


def _sample_responses(args: argparse.Namespace, examples) -> list[list[str]]:
    """``args.samples`` responses per question from ``args.policy`` (temperature ``args.temperature``)."""
    import torch

    from purerl.models import load_policy
    from purerl.prompts import format_prompt
    from purerl.rollout.hf import generate

    model, tokenizer = load_policy(args.policy)
    torch.manual_seed(args.seed)
    out = []
    for e in examples:
        prompt = format_prompt(e.question, args.template, tokenizer)
        rollout = generate(model.eval(), tokenizer, [prompt] * args.samples, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature)  # fmt: skip
        out.append(tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True))
    return out


def _grade(args: argparse.Namespace) -> str:
    import json

    from purerl.grading import GradingConfig, extract_answer, grade

    cfg = GradingConfig(extract=tuple(args.extract), timeout=args.timeout)
    total = correct = missing = agree = labelled = 0
    disagreements = []
    graded_rows = []
    for row, example, responses, labels in _graded_rows(args):
        grades = [grade(r, example.gold, cfg) for r in responses]
        total += len(grades)
        correct += sum(g is True for g in grades)
        missing += sum(g is None for g in grades)
        if labels is not None:
            for i, (g, lab) in enumerate(zip(grades, labels)):
                labelled += 1
                agree += bool(g) == bool(lab)
                if bool(g) != bool(lab):
                    answer = extract_answer(responses[i], cfg.extract)
                    disagreements.append(
                        f"  row {example.row} response {i}: gold {example.gold}, answer {answer!r}, "
                        f"ours {g}, label {lab}"
                    )
        graded_rows.append({**row, "purerl_grade": grades})
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in graded_rows)
    lines = [
        f"file        {args.file}",
        f"responses   {total}",
        f"correct     {correct} ({100 * correct / total:.1f}%)",
        f"no answer   {missing} ({100 * missing / total:.1f}%)",
    ]
    if labelled:
        lines.append(f"agreement   {agree} / {labelled} ({100 * agree / labelled:.2f}%) with field {args.labels!r}")
        lines += disagreements
    return "\n".join(lines)


def _bon(args: argparse.Namespace) -> str:
    import json

    from purerl.bon import AGGREGATIONS, bon_accuracy, format_table, make_question
    from purerl.grading import grade
    from purerl.steps import split_steps

    rows = _graded_rows(args)
    step_scores = [None] * len(rows)
    methods = ["majority"]
    if args.outcome:
        methods.append("score")
    prm = None
    if args.prm:
        from purerl.builders import load_prm

        prm = load_prm(args.prm, args.prm_kind, score_map=args.score_map)
        methods += list(AGGREGATIONS) + [f"weighted_{a}" for a in AGGREGATIONS]
    questions = []
    for k, (row, example, responses, labels) in enumerate(rows):
        if prm is not None:
            steps = [[s.text for s in split_steps(r, args.separator)] for r in responses]
            step_scores[k] = prm.score([example.question] * len(responses), steps)
        correct = labels if labels is not None else [bool(grade(r, example.gold)) for r in responses]
        outcome = None
        if args.outcome:
            values = row.get(args.outcome)
            if values is None or len(values) != len(responses):
                raise ValueError(f"{args.file} row {example.row}: field {args.outcome!r} needs one score per response")
            outcome = [v[0] if isinstance(v, list) else v for v in values]  # [[3.5], ...] or [3.5, ...]
        questions.append(make_question(responses, correct, step_scores[k], outcome))
    table = bon_accuracy(questions, methods, prm.score_range if prm else (-1.0, 1.0))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"questions": len(questions), "accuracy": table}, f, indent=2)
    return f"{len(questions)} questions; accuracy (%) of the pick among N responses\n" + format_table(table)


def _eval(args: argparse.Namespace) -> str:
    from purerl.evaluate import EvalConfig, run_eval

    cfg = EvalConfig(policy=args.policy, dtype=args.dtype, device=args.device, benchmarks=args.benchmarks,
                     limit=args.limit, template=args.template, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size, greedy=not args.no_greedy, samples=args.samples,
                     temperature=args.temperature, seed=args.seed, out=args.out, threads=args.threads)  # fmt: skip
    if args.data_dir:
        cfg.data_dir = args.data_dir
    return run_eval(cfg)


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

    def responses_file(p, what: str) -> None:
        p.add_argument("file", help=f"a JSONL (or JSON / parquet) of {what}")
        p.add_argument("--responses", default="response", help="field of the response(s): a string or a list")
        p.add_argument(
            "--gold",
            nargs="+",
            default=["answer", "gt", "final_answer", "last_boxed:solution"],
            help="field spec(s) of the gold answer, first present wins (last_boxed:FIELD allowed)",
        )
        p.add_argument("--labels", help="field of given grades (a bool or a list of bools) to compare or use")
        p.add_argument("--out", help="write the results here")

    grade_cmd = sub.add_parser("grade", help="grade responses against gold answers (math-verify)")
    responses_file(grade_cmd, "responses with gold answers")
    grade_cmd.add_argument("--extract", nargs="+", default=["boxed", "answer_is"], help="answer extractors, in order")
    grade_cmd.add_argument("--timeout", type=float, default=5.0, help="seconds one comparison may take")
    grade_cmd.set_defaults(run=_grade)

    bon = sub.add_parser("bon", help="Best-of-N: accuracy of PRM / outcome-score / vote picks for N = 1, 2, 4, ...")
    responses_file(bon, "questions, each with several sampled responses")
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

    ev = sub.add_parser("eval", help="greedy pass@1 and sampled avg@k / pass@k on math benchmarks")
    ev.add_argument("--policy", default="smollm2-135m-instruct", help="folder, hub id, .gguf file or known name")
    ev.add_argument("--benchmarks", nargs="+", default=["math500"],
                    help="math500 minerva_math olympiadbench aime24 amc23, or dataset files")  # fmt: skip
    ev.add_argument("--data-dir", help="folder of <benchmark>.jsonl (default: ../shared/data/benchmarks)")
    ev.add_argument("--limit", type=int, help="first N problems of each benchmark")
    ev.add_argument("--template", default="chat", help="qwen_math_cot, chat, plain or raw")
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
    ev.set_defaults(run=_eval)

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
