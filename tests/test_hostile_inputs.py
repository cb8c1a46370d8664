"""Hostile and malformed input to answer extraction and to `purerl grade`, `bon`, `credit` and `steps`,
run through the real command in process: bounded time on 100-200 KB floods, and for every bad file,
row, field or argument exit status 2 with one stderr line ``purerl <command>: error: ...`` that names
it, no traceback, and no grading or model loading before the refusal.

Counts of inputs tried: one test id per entry of FLOODS x EXTRACTORS (time), FLOODS (grade), ROW_CASES,
FILE_CASES, GRADE_ARG_CASES, BON_CASES, CREDIT_CASES, STEPS_CASES; plus the hypothesis examples.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import purerl.grading
import purerl.pipeline.steps
from purerl.commands.cli import main
from purerl.grading import (
    EVAL_EXTRACTORS,
    GradingConfig,
    _clean,
    answer_is,
    answers_match,
    extract_answer,
    grade,
    last_boxed,
    last_math,
    normalize,
)

BOUND_S = 2.0
"""Seconds any one extraction or grade call may take on a hostile string (milliseconds in fact)."""
K = 1000

FLOODS = {
    "boxed{ x140KB": "\\boxed{" * (140 * K // 7),
    "fbox{": "\\fbox{" * (150 * K // 6),
    "boxed{ then text": "\\boxed{1" * (150 * K // 8),
    "nested balanced boxes": "\\boxed{" * (100 * K // 8) + "}" * (100 * K // 8),
    "boxed space": "\\boxed " * (150 * K // 7),
    "boxes joined by commas": "\\boxed{1}, " * (150 * K // 11),
    "spaces between boxes": "\\boxed{1}" + " " * 150 * K + "x\\boxed{2}",
    "open braces": "{" * 200 * K,
    "close braces": "}" * 200 * K,
    "backslashes": "\\" * 200 * K,
    "escaped braces": "\\{" * (100 * K),
    "dollars": "$" * 200 * K,
    "dollar pairs": "$a" * (100 * K),
    "double dollars unclosed": "$$a" * (60 * K),
    "open parens": "\\(" * (100 * K),
    "open brackets": "\\[" * (100 * K),
    "answer is": "the answer is " * (150 * K // 14),
    "answer: colons": "Final Answer:" * (150 * K // 13),
    "answer then spaces": "answer" + " " * 150 * K + "x",
    "answer is boxed{": "The answer is \\boxed{" * (150 * K // 21),
    "trailing backslash-spaces": "The answer is " + "\\ " * (90 * K) + "x",
    "digits with commas": "1," * (100 * K),
    "newlines": "\n" * 200 * K,
    "sentences": "a. " * (60 * K),
}
EXTRACTORS = {
    "last_boxed": last_boxed,
    "answer_is": answer_is,
    "last_math": last_math,
    "extract_answer": lambda t: extract_answer(t, EVAL_EXTRACTORS),
    "normalize": normalize,
    "clean": _clean,
}


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize("extractor", EXTRACTORS)
@pytest.mark.parametrize("flood", FLOODS)
def test_extraction_of_a_flood_takes_milliseconds(flood, extractor):
    assert 100 * K <= len(FLOODS[flood]) <= 200 * K
    assert _seconds(EXTRACTORS[extractor], FLOODS[flood]) < BOUND_S


@pytest.fixture(scope="module")
def warm_worker():
    """The math-verify worker started outside the timed calls (its start-up is not the call's time)."""
    assert answers_match("0.5", r"\frac12")


@pytest.mark.parametrize("flood", FLOODS)
def test_grading_a_flood_is_bounded(flood, warm_worker):
    answers_match("0.5", r"\frac12")  # a fresh worker if the last call's was killed
    assert _seconds(grade, FLOODS[flood], "3", GradingConfig(extract=EVAL_EXTRACTORS, timeout=0.5)) < BOUND_S


_PIECES = ["\\boxed{", "\\fbox{", "\\boxed ", "{", "}", "\\", "$", "$$", "\\(", "\\[", "answer is ", "Answer:",
           " ", "\n", ",", "and", "1", ".", "="]  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(unit=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6).map("".join),
       size=st.integers(100 * K, 200 * K))  # fmt: skip
def test_any_repeated_hostile_text_is_extracted_in_time(unit, size):
    text = (unit * (size // len(unit) + 1))[:size]
    for extractor in EXTRACTORS.values():
        assert _seconds(extractor, text) < BOUND_S


# ------------------------------------------------------------------------------ the real command


def one_line(capsys, code: int, command: str, *needles: str) -> str:
    """The single stderr line of a refused command: exit 2, ``purerl <command>: error:``, ``needles``."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"purerl {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail (exit 1, not 2) if a command grades a response before refusing its input (purerl.commands.bon first:
    importing it binds the names it takes from purerl.grading)."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the input was refused")

    for target in (
        "purerl.commands.bon.extract_answer",
        "purerl.grading.extract_answer",
        "purerl.grading.call_with_timeout",
    ):
        monkeypatch.setattr(target, boom)


GOOD = {"question": "1+2?", "answer": "3", "response": [r"\boxed{3}", r"\boxed{4}"], "ok": [True, False],
        "score": [0.9, 0.1]}  # fmt: skip


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# each bad row is the second row of a file (row 1), after a good one
ROW_CASES = {
    "response a number": ({"response": 7}, [], ["'response' holds a number (7)"]),
    "response an object": ({"response": {"text": "x"}}, [], ["'response' holds an object"]),
    "response a boolean": ({"response": True}, [], ["'response' holds a boolean"]),
    "response null": ({"response": None}, [], ["'response' holds null"]),
    "response item a number": ({"response": ["ok", 5]}, [], ["'response' item 1 holds a number (5)"]),
    "response item null": ({"response": ["ok", None]}, [], ["'response' item 1 holds null"]),
    "response item a list": ({"response": [["a"], "b"]}, [], ["'response' item 0 holds a list"]),
    "response item an object": ({"response": ["a", {"b": 1}]}, [], ["'response' item 1 holds an object"]),
    "empty response list": ({"response": []}, [], ["'response' is an empty list"]),
    "no response field": ({"response": "drop"}, [], ["no field 'response'"]),
    "gold an object": ({"answer": {"value": 3}}, [], ["'answer' holds an object"]),
    "gold list of objects": ({"answer": [{"value": 3}]}, [], ["'answer' holds an object"]),
    "gold list of lists": ({"answer": [["3"]]}, [], ["'answer' holds a list"]),
    "no gold": ({"answer": "drop"}, [], ["no answer in field(s)"]),
    "question a number": ({"question": 12}, [], ["'question' holds a number (12)"]),
    "question a list": ({"question": ["a"]}, [], ["'question' holds a list"]),
    "labels a string": ({"ok": "yes"}, ["--labels", "ok"], ["'ok' holds a string"]),
    "labels a number": ({"ok": 1}, ["--labels", "ok"], ["'ok' holds a number (1)"]),
    "label item a string": ({"ok": ["yes", True]}, ["--labels", "ok"], ["'ok' item 0 holds a string"]),
    "label item a number": ({"ok": [True, 0]}, ["--labels", "ok"], ["'ok' item 1 holds a number (0)"]),
    "label item null": ({"ok": [True, None]}, ["--labels", "ok"], ["'ok' item 1 holds null"]),
    "too few labels": ({"ok": [True]}, ["--labels", "ok"], ["1 labels for 2 responses"]),
    "too many labels": ({"ok": [True, True, False]}, ["--labels", "ok"], ["3 labels for 2 responses"]),
    "no labels field": ({"ok": "drop"}, ["--labels", "ok"], ["no field 'ok'"]),
}


@pytest.mark.parametrize("command", ["grade", "bon"])
@pytest.mark.parametrize("case", ROW_CASES)
def test_a_bad_row_is_one_line_naming_file_row_and_field(case, command, tmp_path, capsys, no_work):
    change, args, needles = ROW_CASES[case]
    bad = {k: v for k, v in {**GOOD, **change}.items() if v != "drop"}
    path = _jsonl(tmp_path / "r.jsonl", [GOOD, bad])
    one_line(capsys, main([command, path, *args]), command, f"{path} row 1: ", *needles)


FILE_CASES = {
    "not JSON": ("r.jsonl", b'{"question": "q", "answer": "1", "response": "a"}\n{broken\n', "line 2: not valid JSON"),
    "not UTF-8": (
        "r.jsonl",
        b'{"question": "q", "answer": "1", "response": "a"}\n{"question": "\xff"}\n',
        "line 2: not UTF-8 text (byte 0xff)",
    ),
    "latin-1 in a .json": ("r.json", b'[{"question": "caf\xe9"}]', "line 1: not UTF-8 text (byte 0xe9)"),
    "nested too deeply": ("r.jsonl", b"[" * 100_000 + b"\n", "line 1: not valid JSON (nested too deeply)"),
    "a row that is a number": ("r.jsonl", b"5\n", "row 0: expected an object with fields, got a number (5)"),
    "a row that is a list": ("r.jsonl", b"[1, 2]\n", "row 0: expected an object with fields, got a list"),
    "a row that is a string": ("r.jsonl", b'"hi"\n', "row 0: expected an object with fields, got a string"),
    "empty file": ("r.jsonl", b"", "no rows"),
    "blank lines only": ("r.jsonl", b"\n  \n\n", "no rows"),
    "JSON that is a number": ("r.json", b"5", "expected a JSON array of rows, got a number (5)"),
    "JSON object of two lists": ("r.json", b'{"a": [], "b": []}', "expected a JSON array of rows"),
    "JSON cut short": ("r.json", b'[{"question": "q"', "not valid JSON"),
    "parquet that is not": ("r.parquet", b"PAR1 not really", "not a readable parquet file"),
    "unknown format": ("r.csv", b"question,answer\n", "unknown format '.csv'"),
}


@pytest.mark.parametrize("command", ["grade", "bon"])
@pytest.mark.parametrize("case", FILE_CASES)
def test_a_bad_file_is_one_line_naming_it(case, command, tmp_path, capsys, no_work):
    name, content, needle = FILE_CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    one_line(capsys, main([command, str(path)]), command, str(path), needle)


def test_a_missing_file_is_named(tmp_path, capsys):
    one_line(capsys, main(["grade", str(tmp_path / "nope.jsonl")]), "grade", "nope.jsonl: no such file")


def _out_cases(tmp_path, source: str) -> dict[str, tuple[str, str]]:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    return {
        "--out in a missing folder": (str(tmp_path / "missing" / "o.json"), "no such folder"),
        "--out under a file": (str(tmp_path / "a_file" / "o.json"), "not a folder"),
        "--out a folder": (str(tmp_path / "a_folder"), "is a folder"),
        "--out the input file": (source, "is the input file"),
    }


GRADE_ARG_CASES = {
    "--timeout 0": (["--timeout", "0"], "--timeout must be a number of seconds > 0, got 0.0"),
    "--timeout -1": (["--timeout", "-1"], "--timeout must be"),
    "--timeout nan": (["--timeout", "nan"], "--timeout must be"),
    "--timeout inf": (["--timeout", "inf"], "--timeout must be"),
    "--extract bogus": (["--extract", "boxed", "bogus"], "--extract 'bogus': unknown answer extractor"),
    "--responses missing": (["--responses", "nope"], "row 0: no field 'nope'"),
    "--gold missing": (["--gold", "nope"], "row 0: no answer in field(s)"),
}


@pytest.mark.parametrize("case", [*GRADE_ARG_CASES, "--out in a missing folder", "--out under a file",
                                  "--out a folder", "--out the input file"])  # fmt: skip
def test_a_bad_grade_argument_is_refused_before_grading(case, tmp_path, capsys, no_work):
    path = _jsonl(tmp_path / "r.jsonl", [GOOD, GOOD])
    if case in GRADE_ARG_CASES:
        args, needle = GRADE_ARG_CASES[case]
    else:
        out, needle = _out_cases(tmp_path, path)[case]
        args = ["--out", out]
    one_line(capsys, main(["grade", path, *args]), "grade", needle)
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0]) == GOOD  # the input is intact


BON_CASES = {
    "mixed N": (
        [GOOD, {**GOOD, "response": ["a", "b", "c"], "ok": [True] * 3}],
        [],
        "row 1: 3 response(s), but row 0 has 2; Best-of-N needs the same number",
    ),
    "mixed N, one response": (
        [GOOD, GOOD, {**GOOD, "response": "a", "ok": True}],
        [],
        "row 2: 1 response(s), but row 0 has 2",
    ),
    "outcome field missing": (
        [GOOD, {k: v for k, v in GOOD.items() if k != "score"}],
        ["--outcome", "score"],
        "row 1: field 'score' needs one score per response (2); got no such field",
    ),
    "outcome count": ([GOOD, {**GOOD, "score": [0.5]}], ["--outcome", "score"], "got 1 scores"),
    "outcome a number": ([GOOD, {**GOOD, "score": 0.5}], ["--outcome", "score"], "got a number (0.5)"),
    "outcome item a string": (
        [GOOD, {**GOOD, "score": [0.5, "high"]}],
        ["--outcome", "score"],
        "row 1: field 'score' item 1 holds a string; expected a number",
    ),
    "outcome item null": ([GOOD, {**GOOD, "score": [None, 0.5]}], ["--outcome", "score"], "item 0 holds null"),
    "outcome item a boolean": (
        [GOOD, {**GOOD, "score": [True, 0.5]}],
        ["--outcome", "score"],
        "item 0 holds a boolean",
    ),
    "outcome item an object": (
        [GOOD, {**GOOD, "score": [{"p": 1}, 0.5]}],
        ["--outcome", "score"],
        "item 0 holds an object",
    ),
    "outcome item a long list": (
        [GOOD, {**GOOD, "score": [[1, 2], 0.5]}],
        ["--outcome", "score"],
        "item 0 holds a list",
    ),
    "--limit -1": ([GOOD, GOOD], ["--limit", "-1"], "--limit must be >= 0, got -1"),
}


@pytest.mark.parametrize("case", [*BON_CASES, "--out in a missing folder", "--out under a file", "--out a folder",
                                  "--out the input file"])  # fmt: skip
def test_a_bad_bon_input_is_refused_before_any_work(case, tmp_path, capsys, no_work):
    if case in BON_CASES:
        rows, args, needle = BON_CASES[case]
        path = _jsonl(tmp_path / "r.jsonl", rows)
    else:
        path = _jsonl(tmp_path / "r.jsonl", [GOOD, GOOD])
        out, needle = _out_cases(tmp_path, path)[case]
        args = ["--outcome", "score", "--out", out]
    one_line(capsys, main(["bon", path, "--labels", "ok", *args]), "bon", needle)
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0]) == GOOD  # the input is intact


def test_nan_and_infinite_outcome_scores_rank_lowest_and_are_counted(tmp_path, capsys):
    # the correct response has a NaN (then an infinite) score: the score pick at N=2 is the other one
    rows = [{**GOOD, "score": [float("nan"), 0.1]}, {**GOOD, "score": [float("inf"), -0.5]}, GOOD]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN and Infinity
    out = tmp_path / "b.json"
    assert main(["bon", str(path), "--labels", "ok", "--outcome", "score", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "2 of 6 responses have a NaN or infinite score: ranked lowest" in report
    result = json.loads(out.read_text())
    assert result["nonfinite_scores"] == 2
    assert result["accuracy"]["score"]["2"] == pytest.approx(1 / 3)  # only the row with finite scores picks right


def test_a_140_kb_box_flood_grades_at_once(tmp_path, capsys):
    rows = [{**GOOD, "response": [FLOODS["boxed{ x140KB"], r"\boxed{3}"]}]
    path = _jsonl(tmp_path / "r.jsonl", rows)
    start = time.perf_counter()
    assert main(["grade", path]) == 0
    assert main(["bon", path, "--outcome", "score"]) == 0
    assert time.perf_counter() - start < 10 * BOUND_S
    assert "no answer   1 (50.0%)" in capsys.readouterr().out


CREDIT_CASES = {
    "nan reward": (["--rewards", "0.5,nan"], "field 2 ('nan') is not a finite number"),
    "inf reward": (["--rewards", "inf"], "field 1 ('inf') is not a finite number"),
    "-inf reward": (["--rewards", "0.1,-inf,0.2"], "field 2 ('-inf') is not a finite number"),
    "overflowing reward": (["--rewards", "1e309"], "field 1 ('1e309') is not a finite number"),
    "huge reward": (["--rewards", "1e7"], "is not a finite number in [-1e+06, 1e+06]"),
    "word": (["--rewards", "0.5,abc"], "field 2 ('abc') is not a number"),
    "empty": (["--rewards", ""], "field 1 ('') is not a number"),
    "empty field": (["--rewards", "0.5,,0.2"], "field 2 ('') is not a number"),
    "semicolons": (["--rewards", "0.5;0.2"], "field 1 ('0.5;0.2') is not a number"),
    "too many steps": (["--rewards", ",".join(["0.5"] * 1001)], "1001 steps; at most 1000"),
    "too many responses": (["--rewards", "0.5"] * 65, "65 responses; give 1 to 64"),
    "temperature 0": (["--temperature", "0"], "--temperature must be a finite number >= 1e-06, got 0.0"),
    "temperature -1": (["--temperature", "-1"], "--temperature must be"),
    "temperature nan": (["--temperature", "nan"], "--temperature must be"),
    "temperature inf": (["--temperature", "inf"], "--temperature must be"),
    "temperature 1e-320": (["--temperature", "1e-320"], "--temperature must be"),
    "tokens per step 0": (["--tokens-per-step", "0"], "--tokens-per-step must be in 1..100000, got 0"),
    "tokens per step -3": (["--tokens-per-step", "-3"], "--tokens-per-step must be in 1..100000, got -3"),
    "tokens per step 10^9": (["--tokens-per-step", "1000000000"], "--tokens-per-step must be in 1..100000"),
    "too many positions": (
        ["--rewards", ",".join(["0.5"] * 1000)] * 64 + ["--tokens-per-step", "100"],
        "64 responses x their longest 1000 steps x 100 tokens per step = 6400000 token positions",
    ),
}


@pytest.mark.parametrize("case", CREDIT_CASES)
def test_absurd_credit_arguments_are_refused(case, capsys):
    args, needle = CREDIT_CASES[case]
    one_line(capsys, main(["credit", *args]), "credit", needle)


def test_sane_credit_arguments_still_work(capsys):
    assert main(["credit", "--rewards", "0.9,0.8", "--rewards", "0.6,-0.7", "--temperature", "1e-6"]) == 0
    assert main(["credit", "--rewards", ",".join(["0.5"] * 1000), "--tokens-per-step", "1"]) == 0
    assert "nan" not in capsys.readouterr().out


STEPS_CASES = {
    "(a+)+$": ("a" * 10_000 + "b", "took over 0.1 s on a response of 10001 characters"),
    "(a|aa)+$": ("a" * 40 + "!", "took over 0.1 s on a response of 41 characters"),
    "(a|a)+$": ("a" * 40 + "!", "took over 0.1 s"),
    "((a|aa)+)+$": ("a" * 40 + "!", "took over 0.1 s"),
    "(": ("a", "is not a valid regular expression (missing )"),
    "[a-": ("a", "is not a valid regular expression"),
    "*a": ("a", "is not a valid regular expression"),
    "a{2,1}": ("a", "is not a valid regular expression"),
    "(?P<1>a)": ("a", "is not a valid regular expression (bad character in group name"),
    "[z-a]": ("a", "is not a valid regular expression (bad character range"),
    "a**": ("a", "is not a valid regular expression (multiple repeat"),
    "\\": ("a", "is not a valid regular expression"),
    "a*": ("a", "matches the empty string"),
    "(x)?": ("a", "matches the empty string"),
    "": ("a", "the step separator must not be empty"),
}


@pytest.mark.parametrize("pattern", STEPS_CASES)
def test_a_bad_or_catastrophic_step_regex_is_one_line_naming_it(pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(purerl.pipeline.steps, "REGEX_TIMEOUT", 0.1)  # the default, 1 s, stops the same way
    text, needle = STEPS_CASES[pattern]
    (tmp_path / "r.txt").write_text(text)
    start = time.perf_counter()
    code = main(["steps", str(tmp_path / "r.txt"), "--regex", "--separator", pattern])
    assert time.perf_counter() - start < 5.0
    line = one_line(capsys, code, "steps", needle)
    assert pattern == "" or repr(pattern) in line


def test_a_sane_step_regex_splits_a_long_response_at_once(tmp_path, capsys):
    (tmp_path / "r.txt").write_text("Add 1.\n\n\n" * 20_000)
    start = time.perf_counter()
    assert main(["steps", str(tmp_path / "r.txt"), "--regex", "--separator", r"\n\s*\n"]) == 0
    assert time.perf_counter() - start < BOUND_S
    assert capsys.readouterr().out.startswith("20000 step(s)")
