"""`purerl eval`, `purerl grade`, `purerl bon` through the real CLI, on real files and a real model folder."""

from __future__ import annotations

import json
import random

import pytest

from purerl.commands.cli import main
from purerl.commands.evaluate import EvalConfig, pass_at_k, run_eval
from purerl.models.loading import ASSETS
from purerl.tasks import arithmetic as A
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
GRADED = SHARED / "graded" / "math_cot_100.jsonl"
POLICY = next(ASSETS.glob("policy-*"))  # the shipped built-in policy: a save_pretrained folder


def test_pass_at_k_matches_brute_force():
    from itertools import combinations

    for n, c, k in [(5, 2, 1), (5, 2, 2), (6, 3, 4), (4, 0, 2), (4, 4, 3)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


@pytest.fixture
def arithmetic_file(tmp_path):
    rng = random.Random(0)
    problems = A.generate_problems(A.ArithmeticConfig(), 12, "heldout", seed=0)
    rng.shuffle(problems)
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps({"problem": p.prompt, "answer": str(p.answer)}) + "\n" for p in problems))
    return path


def _eval(out, data, **kw):
    cfg = EvalConfig(policy=str(POLICY), benchmarks=[str(data)], template="raw", max_new_tokens=80, batch_size=5,
                     samples=2, out=str(out), threads=1, **kw)  # fmt: skip
    return run_eval(cfg)


def test_eval_writes_every_response_and_resumes_after_a_crash(tmp_path, arithmetic_file):
    table = _eval(tmp_path / "a", arithmetic_file)
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    records = (tmp_path / "a" / "responses.jsonl").read_text().splitlines()
    assert len(records) == 12 * 3  # greedy + 2 samples per problem
    greedy = results["table"]["greedy pass@1"]["arith"]
    assert greedy > 0.5  # the warm start solves most held-out problems greedily (0.73 on 128; misconception)
    assert {"greedy pass@1", "avg@2", "pass@2"} <= set(results["table"])
    assert results["table"]["pass@2"]["arith"] >= results["table"]["avg@2"]["arith"]
    assert "greedy pass@1" in table and (tmp_path / "a" / "results.csv").read_text().startswith("metric,arith,avg")
    rec = json.loads(records[0])
    assert rec["correct"] == (rec["answer"] == rec["gold"][0])
    # a crash: the last batch never finished and a line was cut mid-write
    crashed = tmp_path / "b"
    crashed.mkdir()
    (crashed / "responses.jsonl").write_text("\n".join(records[:20]) + "\n" + records[20][:30])
    _eval(crashed, arithmetic_file)
    again = (crashed / "responses.jsonl").read_text().splitlines()
    assert len(again) == 36 and again[:20] == records[:20]
    resumed = json.loads((crashed / "results.json").read_text())
    assert resumed["table"]["greedy pass@1"] == results["table"]["greedy pass@1"]


def test_eval_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["eval", "--policy", str(POLICY), "--benchmarks", "gsm8k", "--data-dir", str(tmp_path)]) == 2
    assert "benchmark 'gsm8k'" in capsys.readouterr().err


@pytest.mark.skipif(not GRADED.exists(), reason=f"shared data not found at {GRADED} (set PURERL_SHARED_DATA)")
def test_grade_and_bon_commands_on_the_graded_file(tmp_path, capsys):
    assert main(["grade", str(GRADED), "--gold", "gt", "--labels", "score", "--out", str(tmp_path / "g.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "responses   800" in out and "agreement   799 / 800 (99.88%)" in out
    assert len((tmp_path / "g.jsonl").read_text().splitlines()) == 100
    bon = ["bon", str(GRADED), "--labels", "score", "--outcome", "pred_score", "--out", str(tmp_path / "b.json")]
    assert main(bon) == 0
    table = json.loads((tmp_path / "b.json").read_text())["accuracy"]
    assert table["majority"]["1"] == table["score"]["1"] == pytest.approx(0.91)  # N=1: every pick is the sample
    assert table["majority"]["8"] == pytest.approx(0.93) and table["score"]["8"] == pytest.approx(0.94)
    assert main(["grade", str(GRADED), "--responses", "nope"]) == 2
    assert "row 0: no field 'nope'" in capsys.readouterr().err


def test_bon_ranks_by_a_prm_and_matches_a_hand_pick(tmp_path, prm_folder):
    """`purerl bon --prm`: every aggregation's pick at N=4 is the response a hand computation picks."""
    from purerl.commands.bon import aggregate
    from purerl.models.loading import load_prm_model
    from purerl.pipeline.steps import split_steps
    from purerl.prm import PRMS

    responses = [
        "Add 1 to 2: 2+1=3.\n\nThe answer is \\boxed{3}.",
        "Add 5 to 2: 2+5=7.\n\nAdd 1 to 7: 7+1=8.\n\nThe answer is \\boxed{8}.",
        "The answer is \\boxed{3}.",
        "Add 9 to 9: 9+9=18.\n\nThe answer is \\boxed{18}.",
    ]
    path = tmp_path / "bon.jsonl"
    path.write_text(json.dumps({"question": "Q: add\nA:\n", "answer": "3", "response": responses}) + "\n")
    assert main(["bon", str(path), "--prm", str(prm_folder), "--out", str(tmp_path / "b.json")]) == 0
    table = json.loads((tmp_path / "b.json").read_text())["accuracy"]
    model, tok = load_prm_model(prm_folder)
    scores = PRMS["token_classification"](model, tok).score(
        ["Q: add\nA:\n"] * 4, [[s.text for s in split_steps(r)] for r in responses]
    )
    correct = [True, False, True, False]
    for how in ("min", "soft_min_sum", "last", "mean", "product"):
        best = max(range(4), key=lambda i: aggregate(scores[i], how))
        assert table[how]["4"] == float(correct[best]), how
    assert table["oracle"]["4"] == 1.0 and table["majority"]["4"] == 1.0  # "3" has two votes


def test_bon_by_sampling_from_a_policy(tmp_path, arithmetic_file):
    out = tmp_path / "b.json"
    args = ["bon", str(arithmetic_file), "--policy", str(POLICY), "--samples", "4", "--template", "raw",
            "--max-new-tokens", "48", "--limit", "5", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["questions"] == 5 and set(result["accuracy"]["majority"]) == {"1", "2", "4"}
    acc = result["accuracy"]
    assert acc["oracle"]["4"] >= acc["majority"]["4"] and acc["oracle"]["4"] >= acc["oracle"]["1"]


def test_the_pure_protocol_is_the_authors_evaluation():
    """`purerl eval --protocol pure`: the reference's qwen25-math-cot-ft prompt (CJReinforce/PURE,
    eval/utils.py: '{input}\\n\\nPlease reason step by step with steps separated by "\\n\\n", and put your
    final answer within \\\\boxed{{}}.', formatted without a chat template), greedy, 3000 tokens, the five
    benchmarks, the last-resort extractor."""
    from purerl.commands.evaluate import EvalConfig, with_protocol
    from purerl.grading import EVAL_EXTRACTORS
    from purerl.tasks.prompts import format_prompt

    question = "Find $x$ if $2x = 6$."
    expected = (
        'Find $x$ if $2x = 6$.\n\nPlease reason step by step with steps separated by "\n\n", and put your final '
        "answer within \\boxed{}."
    )
    assert format_prompt(question, "qwen25_math_cot_ft") == expected
    cfg = with_protocol(EvalConfig(samples=4, max_new_tokens=100, template="chat"), "pure")
    assert (cfg.template, cfg.max_new_tokens, cfg.greedy, cfg.samples) == ("qwen25_math_cot_ft", 3000, True, 0)
    assert cfg.benchmarks == ["math500", "minerva_math", "olympiadbench", "aime24", "amc23"]
    assert cfg.extract == EVAL_EXTRACTORS
    assert with_protocol(EvalConfig(benchmarks=["aime24"]), "pure", benchmarks_given=True).benchmarks == ["aime24"]
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        with_protocol(EvalConfig(), "verl")
