"""purerl.io.responses: reading responses files (errors name file, row and field) and the `grade` report."""

from __future__ import annotations

import json

import pytest

from purerl.io.data import DataError
from purerl.io.responses import grade_report, read_response_rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def three_rows(tmp_path):
    """Six responses: four right, one wrong, one without an answer; one label disagrees with the grade."""
    half = ["no idea", r"\boxed{0.5}", r"\boxed{\frac12}"]
    rows = [
        {"question": "1+2?", "answer": "3", "response": [r"\boxed{3}", r"\boxed{4}"], "ok": [True, True]},
        {"question": "2+2?", "gt": "4", "response": "so the answer is 4", "ok": True},
        {"question": "half?", "answer": "0.5", "response": half, "ok": [False, True, True]},
    ]
    return _jsonl(tmp_path / "r.jsonl", rows)


def test_rows_hold_responses_gold_and_labels(three_rows):
    rows = read_response_rows(three_rows, labels_field="ok")
    assert [len(r.responses) for r in rows] == [2, 1, 3]
    assert rows[1].responses == ["so the answer is 4"] and rows[1].labels == [True]  # a string: one response
    assert rows[1].example.gold == ["4"] and rows[2].fields["question"] == "half?"
    assert len(read_response_rows(three_rows, limit=2)) == 2
    assert read_response_rows(three_rows)[0].labels is None


def test_a_missing_field_or_label_count_is_a_one_line_error(three_rows, tmp_path):
    fields = r"\(fields: question, answer, response, ok\)"
    with pytest.raises(DataError, match=r"r\.jsonl row 0: no field 'answers' " + fields):
        read_response_rows(three_rows, responses_field="answers")
    with pytest.raises(DataError, match=r"r\.jsonl row 0: no field 'label'"):
        read_response_rows(three_rows, labels_field="label")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "1", "response": ["a", "b"], "ok": [True]}])
    with pytest.raises(DataError, match=r"bad\.jsonl row 0: 1 labels for 2 responses"):
        read_response_rows(bad, labels_field="ok")
    no_gold = _jsonl(tmp_path / "nogold.jsonl", [{"question": "q", "response": "a"}])
    with pytest.raises(DataError, match=r"nogold\.jsonl row 0: no answer"):
        read_response_rows(no_gold)


def test_sampled_responses_replace_the_files_and_its_labels(three_rows):
    asked = []

    def sample(questions):
        asked.append(questions)
        return [[f"{q} -> a", f"{q} -> b"] for q in questions]

    rows = read_response_rows(three_rows, responses_field="nope", labels_field="ok", limit=2, sample=sample)
    assert asked == [["1+2?", "2+2?"]]
    assert rows[1].responses == ["2+2? -> a", "2+2? -> b"] and rows[1].labels is None


def test_grade_report_totals_and_disagreements(three_rows, tmp_path):
    out = tmp_path / "graded.jsonl"
    rows = read_response_rows(three_rows, labels_field="ok")
    report = grade_report(rows, three_rows, labels_field="ok", out=str(out)).splitlines()
    assert report[:4] == [
        f"file        {three_rows}",
        "responses   6",
        "correct     4 (66.7%)",
        "no answer   1 (16.7%)",
    ]
    assert report[4] == "agreement   5 / 6 (83.33%) with field 'ok'"
    assert report[5:] == ["  row 0 response 1: gold ['3'], answer '4', ours False, label True"]
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["purerl_grade"] for g in graded] == [[True, False], [True], [None, True, True]]
    assert graded[2]["ok"] == [False, True, True]  # the row's own fields are kept
    no_labels = grade_report(read_response_rows(three_rows), three_rows)
    assert "agreement" not in no_labels and no_labels.endswith("no answer   1 (16.7%)")
