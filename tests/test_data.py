"""purerl.io.data: every shared benchmark / training file through one field mapping, every format, and
errors that name the file, row and field."""

from __future__ import annotations

import json

import pytest

from purerl.io.data import DataConfig, DataError, benchmark_path, load_examples, read_rows
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason=f"shared data not found at {SHARED} (set PURERL_SHARED_DATA)"
)


@needs_shared
@pytest.mark.parametrize(
    "name, rows, first_answer",
    [
        ("benchmarks/math500.jsonl", 500, [r"\left( 3, \frac{\pi}{2} \right)"]),
        ("benchmarks/minerva_math.jsonl", 272, ["1.6"]),  # last \boxed{} of the solution
        ("benchmarks/olympiadbench.jsonl", 675, ["2"]),  # final_answer, a list
        ("benchmarks/aime24.jsonl", 30, ["204"]),
        ("benchmarks/amc23.jsonl", 40, ["27"]),  # the number 27.0
        ("graded/math_cot_100.jsonl", 100, ["420"]),
    ],
)
def test_every_shared_benchmark_loads_with_the_default_mapping(name, rows, first_answer):
    examples = load_examples(DataConfig(path=str(SHARED / name)), require_answer=True)
    assert len(examples) == rows
    assert examples[0].answer == first_answer
    assert all(e.question and e.gold for e in examples)


@needs_shared
def test_olympiadbench_answers_lose_their_dollar_signs():
    examples = load_examples(DataConfig(path=str(SHARED / "benchmarks/olympiadbench.jsonl")))
    assert examples[1].answer == [r"\frac{1}{2 n+2}"]


@needs_shared
def test_pure_training_prompts_split_rewarded_and_monitoring_answers():
    examples = load_examples(DataConfig(path=str(SHARED / "train/math8k_pure.json")))
    assert len(examples) == 8523
    with_gt = [e for e in examples if e.answer is not None]
    assert len(with_gt) == 879 and all(e.ref_answer is None for e in with_gt)
    monitored = [e for e in examples if e.answer is None and e.ref_answer is not None]
    assert len(monitored) == 7640  # 4 of the 7644 rows have ref_answer "None" or ""
    assert examples[0].answer is None and examples[0].ref_answer == ["118"]
    assert examples[0].meta["level"] == "5"


def _rows():
    return [{"problem": "1+1?", "solution": r"so \boxed{2}", "id": 1}, {"problem": "2+2?", "solution": r"\boxed{4}"}]


def test_json_jsonl_parquet_and_datasets_folders_give_the_same_examples(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    seen = []
    for name, split in (("a.jsonl", "train"), ("a.json", "train"), ("b.json", "train"), ("a.parquet", "train"),
                        ("ds", "test")):  # fmt: skip
        examples = load_examples(DataConfig(path=str(tmp_path / name), split=split), require_answer=True)
        seen.append([(e.question, e.answer) for e in examples])
    assert all(s == [("1+1?", ["2"]), ("2+2?", ["4"])] for s in seen)
    with pytest.raises(DataError, match="no split 'train'"):
        read_rows(tmp_path / "ds", "train")


def test_custom_mapping_and_limit(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"input": "What?", "target": "7", "gt": "8"}) + "\n")
    cfg = DataConfig(path=str(path), question=["input"], answer=["target"], ref_answer=["gt"], limit=1)
    (e,) = load_examples(cfg)
    assert (e.question, e.answer, e.ref_answer) == ("What?", ["7"], ["8"])


def test_errors_name_the_file_row_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem": "ok", "answer": "1"}) + "\n" + json.dumps({"query": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl row 1: no question in field\(s\).*fields: query"):
        load_examples(DataConfig(path=str(path)))
    path.write_text(json.dumps({"problem": "ok"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl row 0: no answer"):
        load_examples(DataConfig(path=str(path)), require_answer=True)
    path.write_text('{"problem": "ok"}\n{broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        load_examples(DataConfig(path=str(path)))
    with pytest.raises(DataError, match="no such file"):
        load_examples(DataConfig(path=str(tmp_path / "missing.jsonl")))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unknown format '\.csv'"):
        load_examples(DataConfig(path=str(tmp_path / "x.csv")))
    with pytest.raises(DataError, match="benchmark 'gsm8k'"):
        benchmark_path("gsm8k", tmp_path)
