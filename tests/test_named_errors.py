"""Every error named (issue 28): the files purerl resumes from, flags that contradict each other, model
references that cannot be found, run folders that are files. Each case runs the real `purerl` command
and checks its exit status, exactly one line on standard error naming the file and line, the setting or
the flag, no traceback, and (where the refusal comes first) that no model was loaded before it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from purerl.commands.cli import build_parser, main
from purerl.models.loading import ASSETS
from purerl.tasks import arithmetic as A
from tests.conftest import TINY_RUN_SETTINGS

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
POLICY = next(ASSETS.glob("policy-*"))


def one_line(capsys, code: int, expected_code: int, *needles: str) -> str:
    """The single stderr line, checked for the exit status, no traceback, and ``needles``."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def problems(tmp_path):
    rows = A.generate_problems(A.ArithmeticConfig(), 3, "heldout", seed=0)
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps({"problem": p.prompt, "answer": str(p.answer)}) + "\n" for p in rows))
    return path


def eval_args(problems, out, *extra: str) -> list[str]:
    return ["eval", "--policy", str(POLICY), "--benchmarks", str(problems), "--template", "raw", "--limit", "3",
            "--max-new-tokens", "8", "--batch-size", "3", "--threads", "1", "--out", str(out), *extra]  # fmt: skip


# ------------------------------------------------------------ files purerl resumes from: no line lost

BAD_LINES = [
    ("not json\n", "line 2: not JSON; fix or delete that line"),
    ('{"benchmark": "arith", "row": 1}\n', "line 2: not a response record ('mode' should be str, got None)"),
    ("[1, 2]\n", "line 2: not a response record (a JSON object)"),
    (b"\xff\xfe\n", "line 2: not UTF-8 text"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES, ids=["not JSON", "missing fields", "a list", "not UTF-8"])
def test_eval_names_a_bad_line_of_its_responses_and_keeps_the_others(bad, message, problems, tmp_path, capsys,
                                                                     nothing_loads):  # fmt: skip
    out = tmp_path / "out"
    good = [{"benchmark": "arith", "row": r, "mode": "greedy", "sample": 0, "gold": ["1"], "answer": "1",
             "correct": True, "truncated": False, "prompt_cut": False, "response": "1"} for r in range(3)]  # fmt: skip
    out.mkdir()
    (out / "config.json").write_text("{}")  # settings it cannot disagree with
    data = json.dumps(good[0]).encode() + b"\n" + (bad if isinstance(bad, bytes) else bad.encode())
    data += b"".join(json.dumps(r).encode() + b"\n" for r in good[1:])
    (out / "responses.jsonl").write_bytes(data)
    one_line(capsys, main(eval_args(problems, out)), 2, f"purerl eval: error: {out / 'responses.jsonl'}, {message}")
    assert (out / "responses.jsonl").read_bytes() == data  # the valid rows after the bad line are all there


def test_eval_drops_only_a_cut_last_line(problems, tmp_path, capsys, caplog):
    """Before: a bad line ended the read and the file was rewritten without every row after it."""
    out = tmp_path / "out"
    assert main(eval_args(problems, out)) == 0
    rows = (out / "responses.jsonl").read_text().splitlines()
    (out / "responses.jsonl").write_text("\n".join(rows) + "\n" + rows[0][:25])  # a crash mid-write
    assert main(eval_args(problems, out)) == 0
    assert (out / "responses.jsonl").read_text().splitlines() == rows  # nothing regenerated, the cut line gone
    assert "dropped its cut last line 4" in caplog.text
    capsys.readouterr()


def label_args(problems, out) -> list[str]:
    return ["label-steps", str(problems), "--out", str(out), "--policy", str(POLICY), "--question", "problem",
            "--gold", "answer", "--responses", "answer", "--k", "2", "--threads", "1"]  # fmt: skip


@pytest.mark.parametrize("which", ["out", "partial"])
def test_label_steps_names_a_bad_line_of_its_output_and_partial_file(which, problems, tmp_path, capsys,
                                                                      nothing_loads):  # fmt: skip
    from purerl.prmtools.labeling import settings_of, side_paths

    out = tmp_path / "steps.jsonl"
    config, partial = side_paths(out)
    config.write_text(json.dumps(settings_of(build_parser().parse_args(label_args(problems, out)))))
    target = out if which == "out" else partial
    record = {"row": 0, "solution": 0, "step": 0, "c": 0}
    data = (json.dumps(record) + '\n{"row": "zero"}\n' + json.dumps(record) + "\n").encode()
    target.write_bytes(data)
    one_line(capsys, main(label_args(problems, out)), 2,
             f"{target}, line 2: not a label-steps record (an object with int row, solution")  # fmt: skip
    assert target.read_bytes() == data


def test_a_bad_log_line_is_named_before_train_resumes(tiny_run, tiny_cache, tmp_path, monkeypatch, capsys,
                                                      nothing_loads):  # fmt: skip
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], '{"no step": 1}', *lines[1:]]) + "\n")
    code = main(["train", TINY, *TINY_RUN_SETTINGS, f"run.out_dir={run}", "--resume"])
    one_line(capsys, code, 2, f'{run / "metrics.jsonl"}, line 2: not a log row (an object with an integer "step")')


def _compare_args(out: Path) -> list[str]:
    arms = out.parent / "arms.yaml"
    arms.write_text("plain: []\n")  # one arm with the config's own settings: those of the tiny run
    return ["compare", TINY, *TINY_RUN_SETTINGS, "--seeds", "0", "--arms", str(arms), "--out", str(out)]


def test_compare_names_a_bad_line_of_a_finished_arm(tiny_run, tiny_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    arm = tmp_path / "compare" / "plain-seed0"
    shutil.copytree(tiny_run, arm)
    (arm / "summary.json").write_text("{}")  # finished: compare reads its metrics and runs nothing
    with (arm / "metrics.jsonl").open("a") as f:
        f.write("{cut\n" + (arm / "metrics.jsonl").read_text().splitlines()[-1] + "\n")
    one_line(capsys, main(_compare_args(tmp_path / "compare")), 2, f"{arm / 'metrics.jsonl'}, line 6: not JSON")


def test_compare_names_why_an_arm_it_resumed_stopped(tiny_run, tiny_cache, tmp_path, monkeypatch, capsys):
    """Before: ``internal error: RuntimeError: plain-seed0 failed; see train.log``."""
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    arm = tmp_path / "compare" / "plain-seed0"
    shutil.copytree(tiny_run, arm)
    assert not (arm / "summary.json").exists()  # unfinished: compare resumes it with `purerl train --resume`
    lines = (arm / "metrics.jsonl").read_text().splitlines()
    (arm / "metrics.jsonl").write_text("\n".join([lines[0], "oops", *lines[1:]]) + "\n")
    line = one_line(capsys, main(_compare_args(tmp_path / "compare")), 2,
                    "purerl compare: error: arm plain-seed0 stopped (exit code 2): purerl train: error: ",
                    f"{arm / 'metrics.jsonl'}, line 2: not JSON", f"its log: {arm / 'train.log'}")  # fmt: skip
    assert line.count("\n") == 0


@pytest.fixture(scope="module")
def prm_run(tiny_cache, tmp_path_factory):
    """A `purerl train-prm` run stopped after 4 steps (a checkpoint, its log), and its arguments."""
    from purerl.config import load_config
    from purerl.models.builtin import builtin_policy_path
    from purerl.models.builtin_prm import prm_examples

    root = tmp_path_factory.mktemp("prm_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PURERL_CACHE", str(tiny_cache))
        policy = builtin_policy_path(load_config(TINY))
        sample, rng = prm_examples(load_config(TINY).task, error_rate=0.3), __import__("random").Random(0)
        steps = root / "steps.jsonl"
        steps.write_text("".join(json.dumps(dict(zip(("prompt", "completions", "labels"), sample(rng)[:3]))) + "\n"
                                 for _ in range(24)))  # fmt: skip
        args = ["train-prm", f"model={policy}", f"data.path={steps}", "batch_size=8", "checkpoint_every=4",
                "eval_every=4", "threads=1", "tensorboard=false"]  # fmt: skip
        assert main([*args, f"out_dir={root / 'run'}", "max_steps=4"]) == 0
    return root / "run", args


def test_train_prm_names_a_bad_line_of_its_log(prm_run, tiny_cache, tmp_path, monkeypatch, capsys, nothing_loads):
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    source, args = prm_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    with (run / "metrics.jsonl").open("r+") as f:
        rows = f.read().splitlines()
        f.seek(0)
        f.write("\n".join([rows[0], "[4]", *rows[1:]]) + "\n")
    capsys.readouterr()
    code = main([*args, f"out_dir={run}", "--resume"])
    one_line(capsys, code, 2, f"purerl train-prm: error: {run / 'metrics.jsonl'}, line 2: not a log row")


# ------------------------------------------------------------------------- flags and folders named


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys, nothing_loads):
    run = tmp_path / "run"
    for flag in ("--resume", "--resume-from"):
        extra = [flag, str(tmp_path)] if flag == "--resume-from" else [flag]
        code = main(["train", f"run.out_dir={run}", *extra, "--overwrite"])
        one_line(capsys, code, 2, f"purerl train: error: {flag} and --overwrite contradict each other")
    data = tmp_path / "steps.jsonl"
    data.write_text("{}\n")
    code = main(["train-prm", f"data.path={data}", f"out_dir={run}", "--resume", "--overwrite"])
    one_line(capsys, code, 2, "purerl train-prm: error: --resume and --overwrite contradict each other")
    assert not run.exists()


def test_a_run_folder_that_is_a_file_is_named(tmp_path, capsys, nothing_loads):
    """Before: ``[Errno 17] File exists``."""
    (tmp_path / "a-file").write_text("x")
    code = main(["train", f"run.out_dir={tmp_path / 'a-file'}"])
    one_line(capsys, code, 2, f"run.out_dir='{tmp_path / 'a-file'}': a file, not a folder")
    code = main(["train", f"run.out_dir={tmp_path / 'a-file' / 'run'}"])
    one_line(capsys, code, 2, f"run.out_dir='{tmp_path / 'a-file' / 'run'}': {tmp_path / 'a-file'} is a file")
    data = tmp_path / "steps.jsonl"
    data.write_text("{}\n")
    code = main(["train-prm", f"data.path={data}", f"out_dir={tmp_path / 'a-file'}"])
    one_line(capsys, code, 2, "purerl train-prm: error: out_dir=", "a file, not a folder")


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_named(tiny_run, tmp_path, capsys, nothing_loads):
    """Before: ``no manifest.json (an unfinished save)`` for a folder that does not exist."""
    missing = tmp_path / "no-such-checkpoint"
    code = main(["train", f"run.out_dir={tmp_path / 'run'}", "--resume-from", str(missing)])
    one_line(capsys, code, 2, f"--resume-from {missing}: no such folder")
    code = main(["train", f"run.out_dir={tmp_path / 'run'}", "--resume-from", str(tiny_run)])
    one_line(capsys, code, 2, f"--resume-from {tiny_run}: a run folder, not one of its checkpoints",
             "or use --resume")  # fmt: skip


EMPTY_FOLDERS = [
    (["train", "policy.path={empty}"], "policy.path='{empty}': an empty folder, not a saved model"),
    (["train", "prm.path={empty}"], "prm.path='{empty}': an empty folder, not a saved model"),
    (["eval", "--policy", "{empty}"], "--policy '{empty}': an empty folder, not a saved model"),
    (["train-prm", "model={empty}"], "model='{empty}': an empty folder, not a saved model"),
    (["steps", "{file}", "--tokenizer", "{empty}"], "--tokenizer '{empty}': an empty folder, not a saved tokenizer"),
    (["train", "policy.path={notes}"], "policy.path='{notes}': a folder without config.json, not a saved model"),
]


@pytest.mark.parametrize(("args", "message"), EMPTY_FOLDERS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_a_folder_without_a_model_is_named(args, message, problems, tmp_path, capsys, nothing_loads):
    """Before: transformers' complaint about a ``model_type`` key, though there was no config.json."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("weights to come")
    values = {"{empty}": str(tmp_path / "empty"), "{notes}": str(tmp_path / "notes"), "{file}": str(problems)}
    for key, value in values.items():
        args, message = [a.replace(key, value) for a in args], message.replace(key, value)
    if args[0] == "eval":
        args = [*eval_args(problems, tmp_path / "out"), *args[1:]]
    elif args[0] == "train":
        args = [*args, f"run.out_dir={tmp_path / 'run'}"]
    elif args[0] == "train-prm":
        args = [*args, f"data.path={problems}", f"out_dir={tmp_path / 'run'}"]
    one_line(capsys, main(args), 2, f"purerl {args[0]}: error: {message}")


# ------------------------------------------------------------------------------------ hub ids

HUB_IDS = [
    (["train", "policy.path=nobody-here/no-such-model"], "policy.path='nobody-here/no-such-model': "),
    (["train", "prm.path=nobody-here/no-such-model"], "prm.path='nobody-here/no-such-model': "),
    (["eval", "--policy", "nobody-here/no-such-model"], "--policy 'nobody-here/no-such-model': "),
    (["train-prm", "model=nobody-here/no-such-model"], "model='nobody-here/no-such-model': "),
]


@pytest.mark.parametrize(("args", "setting"), HUB_IDS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
@pytest.mark.parametrize("hub", ["unreachable", "no such model"])
def test_a_hub_id_that_cannot_be_had_is_named_in_a_second(args, setting, hub, problems, tmp_path, monkeypatch,
                                                          capsys, fake_hub, free_port, nothing_loads):  # fmt: skip
    """Before: 54 s and 45 lines of retries, without naming the setting."""
    if hub == "unreachable":  # nothing listens there: the connection is refused
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port}")
    if args[0] == "eval":
        args = [*eval_args(problems, tmp_path / "out"), *args[1:]]
    elif args[0] == "train":
        args = [*args, f"run.out_dir={tmp_path / 'run'}"]
    elif args[0] == "train-prm":
        args = [*args, f"data.path={problems}", f"out_dir={tmp_path / 'run'}"]
    start = time.monotonic()
    code = main(args)
    why = "the Hugging Face hub (http://127.0.0.1:" if hub == "unreachable" else "no such model on the Hugging Face"
    one_line(capsys, code, 2, f"purerl {args[0]}: error: {setting}", why, "point it at a local folder")
    assert time.monotonic() - start < 5


def test_a_hub_id_the_hub_knows_passes(fake_hub, tmp_path):
    from purerl.config.validation import check_model_path

    fake_hub.update({"Qwen/Qwen2.5-Math-7B", "gpt2"})
    for value in ("Qwen/Qwen2.5-Math-7B", "gpt2"):
        check_model_path("policy.path", value)


def test_the_builtin_prm_warning_on_a_dataset_task_comes_once(problems, tmp_path):
    """Before: printed twice (the config is checked when it loads and again by the trainer)."""
    cmd = [sys.executable, "-m", "purerl", "train", "data.task=dataset", f"data.train.path={problems}",
           f"run.out_dir={tmp_path / 'run'}", "policy.path=./no-such-policy"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("prm.path is empty") == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("purerl train: error: policy.path='./no-such-policy'")
