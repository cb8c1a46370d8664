"""The real `purerl` command, run as a subprocess the way a user runs it."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "purerl", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_subcommands():
    out = run("--help")
    assert out.returncode == 0
    assert "credit" in out.stdout and "steps" in out.stdout


def test_credit_default_shows_the_sum_form_hack():
    out = run("credit")
    assert out.returncode == 0, out.stderr
    rows = {line[:16].strip(): line.split() for line in out.stdout.splitlines() if line[:16].strip()}
    solves, thinking = rows["solves it"], rows["only thinking"]
    # columns: name... steps, min r, sum r, then (G_0, A_0) for soft_min, min, sum
    min_adv = float(solves[-3]), float(thinking[-3])
    sum_adv = float(solves[-1]), float(thinking[-1])
    assert min_adv[0] > min_adv[1]  # min-form prefers the answer that solves it
    assert sum_adv[1] > sum_adv[0]  # sum-form prefers the one that only thinks


def test_credit_rejects_a_bad_field():
    out = run("credit", "--rewards", "0.5,abc")
    assert out.returncode == 2
    assert "field 2 ('abc') is not a number" in out.stderr
    assert "Traceback" not in out.stderr


def test_steps_with_a_tokenizer_folder(tmp_path, bpe_tokenizer):
    bpe_tokenizer.save_pretrained(tmp_path / "tok")
    response = tmp_path / "response.txt"
    response.write_text("Add 1 to 2: 2+1=3.\n\nThe answer is \\boxed{3}.", encoding="utf-8")
    out = run("steps", str(response), "--tokenizer", str(tmp_path / "tok"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 step(s)")
    assert "ends at token" in out.stdout and "'.'" in out.stdout
    out = run("steps", "-", "--separator", " ## ", stdin="a ## b ## c")
    assert out.stdout.startswith("3 step(s)")
    missing = run("steps", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_bad_config_value_answers_without_loading_torch():
    """`purerl train` checks its config before importing the trainer (and torch / transformers)."""
    code = (
        "import sys\n"
        "from purerl.commands.cli import main\n"
        "rc = main(['train', 'run.steps=abc'])\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2 []", out.stderr
    assert out.stderr.strip() == "purerl train: error: run.steps: expected an integer, got 'abc'"
