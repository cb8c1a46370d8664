"""`purerl train-prm` on step-labelled data: that it learns (the trained PRM beats its untrained head on
held-out steps with exact labels), the two stages, held-out evaluation, the saved PRM's scores against its
raw logits, truncation, resume, LoRA, PRM800K's layout, and the result loading where `purerl train` and
`bon` load a PRM."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from purerl.commands.cli import main
from purerl.prmtools.stepdata import StepDataConfig, StepExample, load_step_examples
from purerl.prmtools.train_prm import encode
from purerl.prmtools.train_prm_config import TrainPRMConfig

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def policy(tiny_cache) -> str:
    """The tiny config's warm-started policy folder (a causal LM: train-prm adds the head)."""
    os.environ["PURERL_CACHE"] = str(tiny_cache)
    from purerl.config import load_config
    from purerl.models.builtin import builtin_policy_path

    return str(builtin_policy_path(load_config(TINY)))


@pytest.fixture(scope="module")
def steps_file(tmp_path_factory) -> Path:
    """60 built-in-task solutions with exact step labels, in TRL's stepwise format."""
    from purerl.config import load_config
    from purerl.models.builtin_prm import prm_examples

    sample, rng = prm_examples(load_config(TINY).task, error_rate=0.3), random.Random(0)
    path = tmp_path_factory.mktemp("steps") / "steps.jsonl"
    with path.open("w") as f:
        for _ in range(60):
            prompt, steps, labels, _ = sample(rng)
            f.write(json.dumps({"prompt": prompt, "completions": steps, "labels": labels}) + "\n")
    return path


def train_prm(policy, steps_file, out, *extra) -> int:
    args = ["train-prm", f"model={policy}", f"data.path={steps_file}", f"out_dir={out}", "batch_size=8",
            "head.epochs=1", "full.epochs=1", "full.lr=1e-4", "eval_every=3", "checkpoint_every=4",
            "heldout_fraction=0.2", "threads=1", "tensorboard=false", *extra]  # fmt: skip
    return main(args)


def test_two_stages_evaluate_and_write_a_loadable_prm(policy, steps_file, tmp_path, capsys):
    out = tmp_path / "prm"
    assert train_prm(policy, steps_file, out) == 0
    printed = capsys.readouterr().out
    assert "eval/step_accuracy" in printed and "prm.path=" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["head"] * 6 + ["full"] * 6  # 48 train examples / 8, per stage
    assert [r["step"] for r in rows if "eval/step_accuracy" in r] == [3, 6, 9, 12]
    meta = json.loads((out / "final" / "purerl_prm.json").read_text())
    assert meta["train"] == {"examples": 48, "cut": 0, "left_out": 0} and meta["separator"] == "\n"
    from purerl.prm.token_classification import TokenClassificationPRM

    prm = TokenClassificationPRM.load(str(out / "final"), separator="\n")
    prompt, steps = "Q: (1+2) mod 10\nA:\n", ["1+2=3", "The answer is \\boxed{3}."]
    scores = prm.score([prompt], [steps])[0]
    # the same numbers straight from the saved weights: the pieces tokenised one by one, the score
    # p(correct) - p(wrong) read at each step's separator token (the format's definition)
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(out / "final").eval()
    tok = AutoTokenizer.from_pretrained(out / "final")
    piece = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids, ends = piece(prompt), []
    for step in steps:
        ids += piece(step) + piece("\n")
        ends.append(len(ids) - 1)
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids])).logits[0].softmax(-1)
    assert model.config.id2label == {0: "wrong", 1: "correct"}
    assert scores == pytest.approx([(probs[k, 1] - probs[k, 0]).item() for k in ends], abs=1e-5)


def exact_solutions(path: Path, split: str, n: int) -> list[dict]:
    """``n`` solutions to problems of ``split`` in the stepwise format, each step labelled by the task's
    exact checker (:func:`arithmetic.rule_checker`): sampled solutions (a wrong result or rewrite at 20%
    of the operation steps, the borrowing misconception, filler), then the other mistakes of a sampling
    policy at 30% of the steps (fragments, early answers, a wrong operation): about half the steps wrong."""
    from purerl.tasks import arithmetic as A

    cfg, rng = A.ArithmeticConfig(error_rate=0.2), random.Random(f"sol-{split}-0")
    rows = []
    for problem in A.generate_problems(cfg, n, split, seed=0):
        steps, _ = A.sample_solution(problem, rng, cfg)
        steps = A.corrupt_solution(problem, steps, rng, 0.3)
        rows.append({"prompt": problem.prompt, "completions": steps, "labels": A.rule_checker(problem.prompt, steps)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def heldout_accuracy(folder: Path, rows: list[dict]) -> float:
    """Share of held-out steps whose exact label the PRM in ``folder`` gets right (score > 0: correct),
    scored the way ``purerl train`` and ``bon`` score (``prm.kind=token_classification``)."""
    from purerl.prm.token_classification import TokenClassificationPRM

    prm = TokenClassificationPRM.load(str(folder), separator="\n")
    scores = prm.score([r["prompt"] for r in rows], [r["completions"] for r in rows])
    pairs = [(s > 0, ok) for row, ss in zip(rows, scores) for s, ok in zip(ss, row["labels"], strict=True)]
    return sum(guess == ok for guess, ok in pairs) / len(pairs)


def test_training_beats_the_untrained_head_on_heldout_steps(tmp_path, monkeypatch):
    """train-prm must learn: on held-out problems' steps with exact labels, the trained PRM is right
    more often than the same base model with its untrained (stage-0) head, and than always guessing
    the majority label.

    Base: the shipped built-in policy (``model=builtin``); 384 training solutions, 128 held-out ones
    (problems of the task's held-out split, so no problem is shared), about 560 held-out steps, close to
    half of them wrong. Measured (2-core CPU, 1 thread, seeds 0-4 of data, head and order; ~15 s each):
    stage 0 0.506 / 0.435 / 0.509 / 0.539 / 0.519, trained 0.684 / 0.725 / 0.718 / 0.715 / 0.711,
    majority label 0.517 / 0.533 / 0.516 / 0.512 / 0.542: the gain over stage 0 was 0.18 to 0.29 and
    over the majority label 0.17 to 0.20, so a gain of 0.08 leaves room for another machine's floats.
    (Scale: docs/prm.md's exact-label PRM, 1843 solutions and 519 steps, reached 0.875.)"""
    from purerl.prmtools.train_prm import PRMTrainer
    from purerl.prmtools.train_prm_config import load_train_prm_config

    monkeypatch.setenv("PURERL_CACHE", str(tmp_path / "cache"))  # the built-in policy is shipped: nothing trains
    train, held = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    exact_solutions(train, "train", 384)
    rows = exact_solutions(held, "heldout", 128)
    settings = ["model=builtin", f"data.path={train}", f"heldout.path={held}", "batch_size=16", "head.epochs=1",
                "head.lr=1e-3", "full.epochs=6", "full.lr=1e-3", "eval_every=1000", "checkpoint_every=1000",
                "threads=1", "tensorboard=false", "seed=0"]  # fmt: skip
    # stage 0: the model train-prm starts from (same config and seed, so the same new head), saved untrained
    start = PRMTrainer(load_train_prm_config(None, [*settings, f"out_dir={tmp_path / 'start'}"]))
    start.model.save_pretrained(tmp_path / "stage0")
    start.tokenizer.save_pretrained(tmp_path / "stage0")
    assert main(["train-prm", *settings, f"out_dir={tmp_path / 'prm'}"]) == 0

    before, after = heldout_accuracy(tmp_path / "stage0", rows), heldout_accuracy(tmp_path / "prm" / "final", rows)
    share = sum(ok for r in rows for ok in r["labels"]) / sum(len(r["labels"]) for r in rows)
    majority = max(share, 1 - share)
    assert 0.4 < share < 0.6  # both labels common: the majority guess is a low bar
    assert after >= before + 0.08, (before, after)
    assert after >= majority + 0.08, (majority, after)
    # the trainer's own held-out number (argmax at each separator) is the same accuracy
    last = json.loads((tmp_path / "prm" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval/steps"] == sum(len(r["labels"]) for r in rows)
    assert last["eval/step_accuracy"] == pytest.approx(after, abs=1.5 / last["eval/steps"])


def test_a_stopped_run_resumes_to_the_same_weights(policy, steps_file, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_prm(policy, steps_file, straight) == 0
    assert train_prm(policy, steps_file, split, "max_steps=5") == 0  # stops inside stage 1 of 2... at 5 of 12
    assert not (split / "final").exists()
    assert main(["train-prm", f"model={policy}", f"data.path={steps_file}", f"out_dir={split}", "batch_size=8",
                 "head.epochs=1", "full.epochs=1", "full.lr=1e-4", "eval_every=3", "checkpoint_every=4",
                 "heldout_fraction=0.2", "threads=1", "tensorboard=false", "--resume"]) == 0  # fmt: skip
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(split / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_a_folder_holding_a_run_and_a_changed_resume_are_refused(policy, steps_file, tmp_path, capsys):
    out = tmp_path / "prm"
    assert train_prm(policy, steps_file, out, "max_steps=2") == 0
    assert train_prm(policy, steps_file, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert train_prm(policy, steps_file, out, "full.lr=0.1", "--resume") == 2
    assert "--resume with changed settings (full)" in capsys.readouterr().err
    assert train_prm(policy, steps_file, out, "--overwrite") == 0


def test_lora_stage_two_writes_a_merged_prm(policy, steps_file, tmp_path):
    out = tmp_path / "prm"
    assert train_prm(policy, steps_file, out, "lora_rank=4", "full.lr=1e-3") == 0
    names = {p.name for p in (out / "final").iterdir()}
    assert "model.safetensors" in names and "adapter_model.safetensors" not in names


def test_long_examples_are_cut_at_a_step_boundary_and_counted(policy, steps_file, tmp_path, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy)
    examples = load_step_examples(StepDataConfig(path=str(steps_file))).examples
    long = StepExample("Q: 1\nA:\n", ["1+1=2"] * 30, [True] * 29 + [False])
    huge = StepExample("Q: " + "9" * 400, ["1+1=2"], [True])
    cfg = TrainPRMConfig(separator="\n")
    limit = max(len(ids) for ids, _ in encode(tok, examples[:3], cfg, max_length=10**6)[0])  # the three fit
    encoded, counts = encode(tok, [*examples[:3], long, huge], cfg, max_length=limit)
    assert counts == {"examples": 5, "cut": 1, "left_out": 1} and len(encoded) == 4
    ids, labels = encoded[3]
    assert len(ids) <= limit and ids[-1] == tok("\n", add_special_tokens=False)["input_ids"][-1]
    assert [x for x in labels if x != -100] == [1] * sum(x != -100 for x in labels)  # the wrong last step was cut
    last_only, _ = encode(tok, examples[:3], TrainPRMConfig(separator="\n", last_step_only=True), max_length=512)
    assert all(sum(x != -100 for x in labels) == 1 for _, labels in last_only)


PRM800K_ROWS = [  # PRM800K's layout, written by hand: chosen completions, a human step, a neutral step, an end
    {"question": {"problem": "What is 1+1?"}, "label": {"steps": [
        {"completions": [{"text": "1+1=2.", "rating": 1}], "human_completion": None, "chosen_completion": 0},
        {"completions": [{"text": "So it is 3.", "rating": -1}, {"text": "So it is 2.", "rating": 1}],
         "human_completion": None, "chosen_completion": 1},
        {"completions": [{"text": "# Answer\n\n2", "rating": 0}], "human_completion": None, "chosen_completion": 0},
    ]}},
    {"question": {"problem": "What is 2*3?"}, "label": {"steps": [
        {"completions": [{"text": "2*3=5.", "rating": -1}, {"text": "2*3=7.", "rating": -1}],
         "human_completion": None, "chosen_completion": None},
        {"completions": [{"text": "never reached", "rating": 1}], "human_completion": None, "chosen_completion": 0},
    ]}},
    {"question": {"problem": "What is 3-1?"}, "label": {"steps": [
        {"completions": [{"text": "3-1=4.", "rating": -1}], "human_completion": {"text": "3-1=2.", "rating": None},
         "chosen_completion": None},
        {"completions": [{"text": "unrated", "rating": None}], "human_completion": None, "chosen_completion": 0},
    ]}},
]  # fmt: skip


def test_prm800k_layout_follows_the_chosen_trajectory(tmp_path):
    path = tmp_path / "prm800k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PRM800K_ROWS))
    loaded = load_step_examples(StepDataConfig(path=str(path)))  # auto-detected
    got = [(e.prompt, e.steps, e.labels) for e in loaded.examples]
    assert got == [
        ("What is 1+1?", ["1+1=2.", "So it is 2.", "# Answer\n\n2"], [True, True, True]),  # neutral: correct
        ("What is 2*3?", ["2*3=5."], [False]),  # none chosen: the first -1 ends it
        ("What is 3-1?", ["3-1=2."], [True]),  # the human's step, then an unrated one ends it
    ]
    wrong = load_step_examples(StepDataConfig(path=str(path), neutral="wrong")).examples[0]
    assert wrong.labels == [True, True, False]
    dropped = load_step_examples(StepDataConfig(path=str(path), neutral="drop"))
    assert len(dropped.examples) == 2 and dropped.skipped == {"a neutral step (neutral=drop)": 1}


def test_prm800k_trains_end_to_end(policy, tmp_path):
    path = tmp_path / "prm800k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PRM800K_ROWS * 4))
    assert main(["train-prm", f"model={policy}", f"data.path={path}", "data.format=prm800k", "heldout_fraction=0",
                 f"out_dir={tmp_path / 'prm'}", "batch_size=4", "threads=1", "tensorboard=false"]) == 0  # fmt: skip
    assert (tmp_path / "prm" / "final" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "data.path: a file of step-labelled solutions is needed"),
        (["data.path=x.jsonl", "data.format=csv"], "data.format='csv': choose one of"),
        (["data.path=x.jsonl", "batch_size=0"], "batch_size must be >= 1"),
        (["data.path=x.jsonl", "head.lr=0"], "head: needs epochs >= 0, lr > 0"),
        (["data.path=x.jsonl", "head.epochs=0", "full.epochs=0"], "nothing to train"),
        (["data.path=x.jsonl", "nope=1"], "unknown key(s) ['nope']"),
        (["data.path=/no/such/steps.jsonl", "model=/no/such/model"], "no such file or folder"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, message, tmp_path, capsys):
    assert main(["train-prm", f"out_dir={tmp_path / 'prm'}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_the_trained_prm_drives_purerl_train_by_config_alone(policy, steps_file, tmp_path, tiny_cache):
    out = tmp_path / "prm"
    assert train_prm(policy, steps_file, out) == 0
    env = {**os.environ, "PURERL_CACHE": str(tiny_cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "purerl", "train", TINY, "prm.kind=token_classification",
                           f"prm.path={out / 'final'}", "run.steps=1", "run.threads=1",
                           f"run.out_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 1 and row["prm/step_mean"] is not None
    # another separator than the one the PRM was trained to be read at (final/purerl_prm.json): refused
    other = subprocess.run([sys.executable, "-m", "purerl", "train", TINY, f"prm.path={out / 'final'}",
                            "prm.separator=;", f"run.out_dir={tmp_path / 'run2'}"], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert "records that this PRM reads its scores at '\\n' after each step" in other.stderr


def test_the_trained_prm_ranks_responses_in_purerl_bon(policy, steps_file, tmp_path, capsys):
    out = tmp_path / "prm"
    assert train_prm(policy, steps_file, out) == 0
    rows = tmp_path / "responses.jsonl"
    good, bad = "1+2=3\n\nThe answer is \\boxed{3}.", "1+2=4\n\nThe answer is \\boxed{4}."
    rows.write_text(json.dumps({"question": "Q: (1+2) mod 10\nA:\n", "answer": "3", "response": [good, bad]}) + "\n")
    capsys.readouterr()
    assert main(["bon", str(rows), "--prm", str(out / "final")]) == 0
    lines = capsys.readouterr().out.splitlines()
    ranked = {line.split()[0] for line in lines if line.split() and line.split()[0] in ("min", "weighted_min")}
    assert ranked == {"min", "weighted_min"}  # the PRM's aggregations are in the table: it loaded and scored
