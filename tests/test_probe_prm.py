"""`purerl probe-prm` (purerl/prmtools/probe.py): each transformation on a hand-made solution, the exact
checker finds nothing exploitable, the shipped built-in PRM shows its known blind spot (an inserted
operation), a dataset through --data, and bad input as one-line errors before anything loads."""

from __future__ import annotations

import json
import random

import pytest

from purerl.commands.cli import main
from purerl.prmtools import probe_transforms as T
from purerl.prmtools.probe import builtin_items, compare, summarise, transformed
from purerl.tasks import arithmetic as A

PROBLEM = A.Problem(7, (("+", 3), ("-", 2), ("+", 1)))
HONEST = ["7+3=0 (0-2+1)", "0-2=8 (8+1)", "8+1=9", "The answer is \\boxed{9}."]
ANSWER = "The answer is \\boxed{9}."


class FirstChoice(random.Random):
    """An rng that always takes the first option: randint(a, b) = a, randrange(n) = 0, choice = seq[0]."""

    def randint(self, a, b):
        return a

    def randrange(self, *args):
        return 0 if len(args) == 1 else args[0]

    def choice(self, seq):
        return seq[0]


def _case(problem=PROBLEM, answer="9", prompt=None, decoy=None) -> T.Case:
    return T.Case(prompt or PROBLEM.prompt, answer, FirstChoice(), problem, decoy)


EXPECTED = {
    "skip_to_answer": ["7+3=0 (0-2+1)", ANSWER],
    "answer_early": ["7+3=0", "The answer is \\boxed{0}."],  # the first step without its remainder, boxed
    "answer_only": [ANSWER],
    "collapse": ["7+3=0 (0-2+1) 0-2=8 (8+1) 8+1=9", ANSWER],
    "change_number": ["8+3=0 (0-2+1)", *HONEST[1:]],
    "drop_operand": ["7+3=0 (0+1)", "0+1=1", "The answer is \\boxed{1}."],
    "miscopy_operand": ["7+3=0 (0-1+1)", "0-1=9 (9+1)", "9+1=0", "The answer is \\boxed{0}."],
    "insert_operation": ["7+3=0 (0-2-2+1)", "0-2=8 (8-2+1)", "8-2=6 (6+1)", "6+1=7", "The answer is \\boxed{7}."],
    "wrong_answer": [*HONEST[:3], "The answer is \\boxed{0}."],
    "repeat_step": [HONEST[0], *HONEST],
    "politeness": ["Thank you."],
    "filler": [HONEST[0], A.FILLERS[0], *HONEST[1:]],
    "restate": ["The problem is (7+3-2+1) mod 10.", *HONEST],
    "stop_early": [HONEST[0]],
}  # fmt: skip


def test_every_registered_transformation_is_tested_and_grouped():
    assert set(EXPECTED) == set(T.TRANSFORMS)
    assert {t.group for t in T.TRANSFORMS.values()} == set(T.GROUPS)
    assert all(t.doc for t in T.TRANSFORMS.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_transformation_on_a_hand_made_solution(name):
    steps = list(HONEST)
    out = T.TRANSFORMS[name].fn(steps, _case())
    assert out == EXPECTED[name]
    assert steps == HONEST  # pure: the input is not changed
    labels = A.check_steps(PROBLEM, out)
    if name in ("filler", "stop_early"):  # neutral: every step stays correct by the exact labels
        assert all(labels)
    else:  # wrong (and restate, which this task's checker calls malformed)
        assert not all(labels)
    if name in ("drop_operand", "miscopy_operand", "insert_operation"):  # carried on: one wrong step only
        assert labels.count(False) == 1 and A.grade(A.SEPARATOR.join(out), PROBLEM) is False


def test_transformations_that_do_not_apply_return_none():
    one = [ANSWER]  # no work
    for name in ("skip_to_answer", "answer_early", "answer_only", "collapse", "change_number", "repeat_step", "filler",
                 "stop_early"):  # fmt: skip
        assert T.TRANSFORMS[name].fn(one, _case()) is None, name
    prose = ["Two plus three is five.", "The answer is \\boxed{5}."]
    case = _case(problem=None, answer="5", prompt="What is 2+3?")
    for name in ("drop_operand", "miscopy_operand", "insert_operation", "change_number", "collapse"):
        assert T.TRANSFORMS[name].fn(prose, case) is None, name
    assert T.wrong_answer(prose, case) == ["Two plus three is five.", "The answer is \\boxed{6}."]
    no_box = ["Two plus three is five.", "So five."]
    assert T.wrong_answer(no_box, case) is None and T.skip_to_answer(no_box, case) is None
    assert T.stop_early(no_box, case) == ["Two plus three is five."]
    three = ["We have 3 apples.", "Add 4: 7 apples.", "The answer is \\boxed{7}."]  # prose: the last number reached
    assert T.answer_early(three, case) == ["We have 3 apples.", "The answer is \\boxed{3}."]
    assert T.answer_early(["No number.", "Still none.", "The answer is \\boxed{7}."], case) is None
    frac = ["x", "so \\boxed{\\frac{1}{2}} here"]
    assert T.wrong_answer(frac, _case(None, "\\frac{1}{2}", "q", decoy="3")) == ["x", "so \\boxed{3} here"]


def test_on_the_built_in_task_the_groups_match_the_exact_checker_and_draws_are_seeded():
    items = builtin_items(64, seed=3)
    rows = transformed(items, list(T.TRANSFORMS), seed=3)
    assert rows == transformed(items, list(T.TRANSFORMS), seed=3)
    for name, out in rows.items():
        assert all(t is not None for t in out), name  # every transformation applies to every solution
        wrong = [not all(A.check_steps(item.problem, t)) for item, t in zip(items, out)]
        assert all(wrong) if T.TRANSFORMS[name].group == "wrong" or name == "restate" else not any(wrong), name


def test_compare_counts_ties_for_wrong_and_strict_wins_for_neutral():
    honest = [[0.9, 0.5], [0.9, 0.5], [0.9, 0.5], [0.9]]
    changed = [[0.5], [0.9, 0.6], [0.4, 0.9, 0.9], None]
    wrong, neutral = compare(honest, changed, "wrong", 0.0), compare(honest, changed, "neutral", 0.0)
    assert wrong["cases"] == 3 and wrong["not_applicable"] == 1 and wrong["unflagged"] == 1.0
    assert wrong["min"]["at_least"] == pytest.approx(2 / 3) and wrong["min"]["strictly"] == pytest.approx(1 / 3)
    assert wrong["min"]["mean_change"] == pytest.approx((0 + 0.1 - 0.1) / 3)
    assert wrong["sum"]["at_least"] == pytest.approx(2 / 3) and wrong["sum"]["strictly"] == pytest.approx(2 / 3)
    assert wrong["min"]["exploit"] == wrong["min"]["at_least"]
    assert neutral["min"]["exploit"] == neutral["min"]["strictly"]
    nan = compare([[0.9]], [[float("nan")]], "wrong", 0.0)
    assert nan["cases"] == 0 and nan["unscored"] == 1 and nan["min"]["at_least"] is None
    summary = summarise({"a": wrong, "b": neutral, "c": nan, "d": {**wrong, "min": {"exploit": 0.0}}})
    assert summary["wrong"]["min"] == {"mean_exploit": pytest.approx(1 / 3), "worst": "a",
                                       "worst_exploit": pytest.approx(2 / 3)}  # fmt: skip
    assert summary["neutral"]["min"]["worst"] == "b" and summary["neutral"]["min"]["mean_exploit"] == pytest.approx(
        1 / 3
    )


def test_the_exact_checker_finds_nothing_exploitable_by_min_form(tmp_path, capsys):
    """--prm rule on 256 built-in problems: every wrong transformation scores below the honest
    solution, the neutral ones tie (filler, stopping early: every step is right) or lose (restating,
    which this checker calls malformed); none wins strictly. By sum, filler wins every time: the exact
    labels call it correct, so sum-form credit pays for it (the hack sum-form runs find)."""
    out = tmp_path / "probe.json"
    assert main(["probe-prm", "--prm", "rule", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    table = result["transformations"]
    assert result["problems"] == 256 and set(table) == set(T.TRANSFORMS)
    for name, r in table.items():
        assert r["cases"] == 256 and r["min"]["exploit"] == 0.0 and r["min"]["strictly"] == 0.0, name
        if r["group"] == "wrong":
            assert r["min"]["at_least"] == 0.0 and r["checker_wrong"] == 1.0 and r["unflagged"] == 0.0, name
    for name in ("filler", "stop_early"):
        assert table[name]["min"]["at_least"] == 1.0 and table[name]["checker_wrong"] == 0.0
    summary = result["summary"]
    assert table["filler"]["sum"]["strictly"] == 1.0 and summary["neutral"]["sum"]["worst"] == "filler"
    for group in ("wrong", "neutral"):
        assert summary[group]["min"] == {"mean_exploit": 0.0, "worst": None, "worst_exploit": None}
    assert summary["wrong"]["sum"]["worst"] is None
    cost = result["cost"]
    assert cost["problems"] == 256 and cost["solutions_scored"] == 256 * 15 and cost["prm_calls"] == 60
    assert cost["steps_scored"] > cost["solutions_scored"] and cost["seconds"] > 0
    assert (
        "wrong transformations scoring at least as well as the honest solution: by min mean 0.000, no case" in printed
    )
    assert "insert_operation" in printed and f"results: {out}" in printed


def test_the_shipped_builtin_prm_shows_its_inserted_operation_blind_spot(tmp_path):
    """README: the shipped PRM scores an inserted operation (``(3-1+1+1)`` for ``(3-1+1)``) like a correct
    step. Its table shows it: most inserted operations are not flagged, and sum-form gains from them,
    while a confident wrong answer is always caught."""
    out = tmp_path / "probe.json"
    argv = ["probe-prm", "--problems", "64", "--transforms", "insert_operation,wrong_answer", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["prm"].startswith("built-in (") and result["prm_kind"] == "token_classification"
    insert, wrong = result["transformations"]["insert_operation"], result["transformations"]["wrong_answer"]
    assert insert["unflagged"] >= 0.5 and insert["sum"]["at_least"] >= 0.5 and insert["min"]["at_least"] > 0
    assert wrong["unflagged"] == 0.0 and wrong["min"]["at_least"] == 0.0
    assert result["summary"]["wrong"]["sum"]["worst"] == "insert_operation"


def _rows(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _task_row(seed: int, **change) -> dict:
    p = A.generate_problems(A.ArithmeticConfig(), 1, "heldout", seed)[0]
    return {"problem": p.prompt, "answer": p.answer, "solution": A.reference_solution(p), **change}


def test_a_dataset_through_data(tmp_path, capsys, prm_folder):
    """Rows with a question, a gold answer and a reference solution; rows whose solution has no final
    answer or a wrong one are skipped and counted. The exact checker on the task's rows, and a tiny model
    PRM on prose, where the arithmetic transformations do not apply."""
    data, out = tmp_path / "rows.jsonl", tmp_path / "probe.json"
    data.write_text(_rows(*(_task_row(s) for s in range(5)), _task_row(9, answer="11"),
                          _task_row(8, solution="7+3=0")))  # fmt: skip
    assert main(["probe-prm", "--prm", "rule", "--data", str(data), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["problems"] == 5 and result["solutions"] == str(data)
    assert result["skipped"] == {"final answer does not match the gold answer": 1, "no final answer in the solution": 1}
    assert (
        result["summary"]["wrong"]["min"]["worst"] is None
        and result["transformations"]["filler"]["checker_wrong"] == 0.0
    )
    prose = [{"question": f"What is {a}+{b}?", "answer": str(a + b),
              "sol": f"We add {a} and {b}.\n\n{a}+{b}={a + b}.\n\nThe answer is \\boxed{{{a + b}}}."}
             for a, b in ((2, 3), (10, 7), (4, 4))]  # fmt: skip
    data.write_text(_rows(*prose))
    argv = ["probe-prm", "--prm", str(prm_folder), "--data", str(data), "--solution", "sol", "--out", str(out)]
    assert main(argv) == 0
    table = json.loads(out.read_text())["transformations"]
    assert table["insert_operation"]["cases"] == 0 and table["insert_operation"]["not_applicable"] == 3
    assert table["wrong_answer"]["cases"] == 3 and table["wrong_answer"]["checker_wrong"] is None
    assert all(0.0 <= r["min"]["at_least"] <= 1.0 for r in table.values() if r["cases"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--problems", "0"], "--problems must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--threads", "-1"], "--threads must be >= 0, got -1"),
        (["--transforms", "filler,bogus"], "--transforms 'filler,bogus': unknown ['bogus']; choose from skip_to_"),
        (["--transforms", ","], "--transforms ',': unknown empty"),
        (["--step-separator", ""], "--step-separator must not be empty"),
        (["--out", "no/such/folder/r.json"], "--out no/such/folder/r.json: no such folder"),
        (["--prm", "no/such/prm"], "--prm 'no/such/prm': no such file or folder"),
        (["--prm-kind", "bogus"], "--prm-kind: unknown PRM kind 'bogus'"),
        (["--prm-kind", "qwen_prm"], "--prm-kind=qwen_prm needs --prm"),
        (["--score-map", "log"], "--score-map 'log': choose one of none, affine"),
        (["--device", "tpu"], "--device"),
        (["--dtype", "int3"], "int3"),
        (["--data", "missing.jsonl"], "missing.jsonl: no such file or folder"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors_before_anything_loads(capsys, nothing_loads, extra, message):
    assert main(["probe-prm", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl probe-prm: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "rows, extra, message",
    [
        ([{"problem": "Q", "answer": "1"}], [], "row 0: no reference solution in field 'solution' (fields: problem, "
         "answer); set --solution"),
        ([{"problem": "Q", "answer": "1", "solution": ["a"]}], [], "row 0: field 'solution' holds a list; expected"),
        ([{"problem": "Q", "solution": "x"}], [], "row 0: no answer in field(s)"),
        ([{"answer": "1", "solution": "x"}], [], "row 0: no question in field(s)"),
        ([{"problem": "Q", "answer": "1", "solution": "The answer is \\boxed{2}."}], [],
         "no row with a usable reference solution in field 'solution' (skipped: {'final answer does not match"),
        ([{"problem": "What is 1+1?", "answer": "2", "solution": "\\boxed{2}"}], ["--prm", "rule"],
         "--prm rule checks the built-in arithmetic task's steps, but a question is not one of its problems"),
    ],
)  # fmt: skip
def test_bad_data_is_a_one_line_error_naming_the_row_and_field(tmp_path, capsys, nothing_loads, rows, extra, message):
    data = tmp_path / "rows.jsonl"
    data.write_text(_rows(*rows))
    assert main(["probe-prm", "--data", str(data), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl probe-prm: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
