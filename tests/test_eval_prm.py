"""purerl eval-prm: ProcessBench-style metrics checked by hand and against plain references, then the
command end to end: the exact checker (F1 and AUROC 1 on exactly labelled data; 4/7 and 7/12, worked
out by hand, on a file whose labels disagree with it), a tiny real PRM against a plain recomputation
from its scores, a hand-written PRM800K fixture, bad inputs."""

from __future__ import annotations

import json
import math
import random

import pytest

from purerl.commands.cli import main
from purerl.prmtools.processbench import (
    auroc,
    average_ranks,
    candidate_thresholds,
    choose_threshold,
    f1_by_threshold,
    first_error_guess,
    processbench_metrics,
    split_examples,
)
from purerl.prmtools.stepdata import StepExample
from purerl.tasks import arithmetic as A

NAN = float("nan")

# (scores, labels) of six hand-made solutions; at threshold 0 the guesses are 2, 0, -1, 1, -1, -1
HAND = [
    ([0.5, 0.3, -0.4], [True, True, False]),  # error at 2, found
    ([-0.1, 0.25], [True, False]),  # error at 1, guessed 0
    ([0.25, 0.9], [True, True]),  # correct, nothing flagged
    ([0.4, -0.2, 0.8], [True, True, True]),  # correct, step 1 flagged
    ([NAN], [False]),  # error at 0 without a score: never below, missed
    ([0.7, NAN], [True, True]),  # correct; the NaN is not an error guess
]


def test_metrics_by_hand():
    scores, labels = [s for s, _ in HAND], [lab for _, lab in HAND]
    assert [first_error_guess(s, 0.0) for s in scores] == [2, 0, -1, 1, -1, -1]
    m = processbench_metrics(scores, labels, 0.0)
    assert (m["solutions"], m["with_error"], m["correct"], m["error_found"], m["correct_kept"]) == (6, 3, 3, 1, 2)
    assert m["error_accuracy"] == pytest.approx(1 / 3) and m["correct_accuracy"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (2 / 3) / (1 / 3 + 2 / 3))  # 4/9
    assert (m["steps"], m["nan_steps"], m["solutions_with_nan"]) == (13, 2, 2)
    # 9 scored correct steps vs the wrong ones at -0.4 (all 9 above) and 0.25 (6 above, one tie): 15.5 / 18
    assert m["auroc"] == pytest.approx(15.5 / 18)
    # only correct solutions: no error accuracy, so no F1
    only_ok = processbench_metrics(scores[2:4], labels[2:4], 0.0)
    assert only_ok["error_accuracy"] is None and only_ok["f1"] is None and only_ok["correct_accuracy"] == 0.5
    # a threshold below every score flags nothing: every correct solution right, no error found
    low = processbench_metrics(scores, labels, -10.0)
    assert (low["error_accuracy"], low["correct_accuracy"], low["f1"]) == (0.0, 1.0, 0.0)


def _pairwise_auroc(scores, labels):
    pos = [s for s, ok in zip(scores, labels) if ok and not math.isnan(s)]
    neg = [s for s, ok in zip(scores, labels) if not ok and not math.isnan(s)]
    if not pos or not neg:
        return None
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))


def test_auroc_matches_a_pairwise_reference_with_ties_and_nans():
    assert average_ranks([2.0, 1.0, 2.0, 2.0, 0.5]) == [4.0, 2.0, 4.0, 4.0, 1.0]
    assert auroc([0.9, 0.4, 0.4, -0.2], [True, True, False, False]) == 0.875
    assert auroc([0.1, 0.1], [True, False]) == 0.5 and auroc([0.3, 0.1], [False, True]) == 0.0
    assert auroc([0.1, 0.2], [True, True]) is None and auroc([0.1, NAN], [True, False]) is None
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        scores = [NAN if rng.random() < 0.1 else round(rng.uniform(-1, 1), 1) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.6 for _ in range(n)]
        expected = _pairwise_auroc(scores, labels)
        assert auroc(scores, labels) == (None if expected is None else pytest.approx(expected))


def _random_solutions(rng: random.Random, n: int):
    scores, labels = [], []
    for _ in range(n):
        k = rng.randint(1, 6)
        scores.append([NAN if rng.random() < 0.1 else round(rng.random(), 1) for _ in range(k)])
        labels.append([rng.random() < 0.8 for _ in range(k)])
    return scores, labels


def test_f1_for_all_thresholds_at_once_matches_one_threshold_at_a_time():
    rng = random.Random(1)
    for _ in range(50):
        scores, labels = _random_solutions(rng, rng.randint(1, 25))
        cands = candidate_thresholds(scores)
        assert cands == sorted(cands)
        fast = f1_by_threshold(scores, labels, cands)
        for t, f1 in zip(cands, fast):
            plain = processbench_metrics(scores, labels, t)["f1"]
            assert f1 == (None if plain is None else pytest.approx(plain))


def test_threshold_choice_by_hand():
    # [0, 1] scores; at 0.625 every guess is right; at 0.45 the error of solution 3 is missed, at 0.675
    # solution 2's 0.65 is flagged
    scores = [[0.9, 0.8], [0.7, 0.65], [0.9, 0.6], [0.3]]
    labels = [[True, True], [True, True], [True, False], [False]]
    assert candidate_thresholds(scores) == pytest.approx([-0.7, 0.45, 0.625, 0.675, 0.75, 0.85, 1.9])
    assert f1_by_threshold(scores, labels, [0.45, 0.625, 0.675]) == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert choose_threshold(scores, labels, natural=0.5) == (pytest.approx(0.625), 1.0)
    # a tie: the score after the first error changes no guess, so 0.3 and 0.65 are equally good;
    # the one closer to the natural threshold wins
    tie_s, tie_l = [[0.2, 0.4], [0.9]], [[False, False], [True]]
    assert choose_threshold(tie_s, tie_l, natural=0.5)[0] == pytest.approx(0.65)
    assert choose_threshold(tie_s, tie_l, natural=0.0)[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="needs solutions with an error and correct ones"):
        choose_threshold([[0.9]], [[True]], natural=0.5)


def test_the_validation_split_is_deterministic_stratified_and_disjoint():
    examples = [StepExample(f"p{i}", ["a"], [i % 3 != 0], row=i) for i in range(30)]  # 10 with an error
    test, val = split_examples(examples, 0.3, seed=4)
    assert sorted(ex.row for ex in test + val) == list(range(30)) and not {e.row for e in test} & {e.row for e in val}
    assert sum(ex.first_error() >= 0 for ex in val) == 3 and sum(ex.first_error() < 0 for ex in val) == 6
    assert [ex.row for ex in split_examples(examples, 0.3, seed=4)[1]] == [ex.row for ex in val]
    assert [ex.row for ex in split_examples(examples, 0.3, seed=5)[1]] != [ex.row for ex in val]


def _write_task_solutions(path, n: int = 60, seed: int = 0) -> list[dict]:
    """Stepwise JSONL of the built-in task's sampled (and sometimes corrupted) solutions, labelled exactly."""
    cfg = A.ArithmeticConfig()
    rng = random.Random(seed)
    rows = []
    for problem in A.generate_problems(cfg, n, "train", seed):
        steps, _ = A.sample_solution(problem, rng, cfg)
        if rng.random() < 0.3:
            steps = A.corrupt_solution(problem, steps, rng, 0.3)
        rows.append({"prompt": problem.prompt, "completions": steps, "labels": A.rule_checker(problem.prompt, steps)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_the_exact_checker_scores_f1_one(tmp_path, capsys):
    data, out = tmp_path / "steps.jsonl", tmp_path / "results.json"
    rows = _write_task_solutions(data)
    n_err = sum(not all(r["labels"]) for r in rows)
    assert 10 < n_err < 50  # both kinds of solution
    assert main(["eval-prm", str(data), "--prm", "rule", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["threshold"] == 0.0 and result["natural_threshold"] == 0.0  # the best F1 closest to natural
    for part in ("test", "validation"):
        m = result[part]
        assert (m["f1"], m["error_accuracy"], m["correct_accuracy"], m["auroc"]) == (1.0, 1.0, 1.0, 1.0)
        assert m["nan_steps"] == 0 and result["natural"][part]["f1"] == 1.0
    assert result["test"]["solutions"] + result["validation"]["solutions"] == 60
    assert result["validation"]["with_error"] == round(0.3 * n_err)
    assert "validation split (--val-fraction 0.3, --seed 0)" in printed and "F1" in printed
    assert "test (natural)" in printed and "results:" in printed


def _plain_f1(scores, labels, t):
    """ProcessBench's F1 at threshold ``t``, by a plain loop (no ranges, no shared helper)."""
    found = errors = kept = correct = 0
    for s, lab in zip(scores, labels):
        guess = -1
        for k, x in enumerate(s):
            if x < t:
                guess = k
                break
        truth = lab.index(False) if False in lab else -1
        if truth >= 0:
            errors, found = errors + 1, found + (guess == truth)
        else:
            correct, kept = correct + 1, kept + (guess == -1)
    a, b = found / errors, kept / correct
    return 2 * a * b / (a + b) if a + b else 0.0


def test_a_tiny_token_classification_prm_matches_a_plain_recomputation(tmp_path, prm_folder):
    """The command's threshold, F1 and AUROC equal a plain recomputation from the PRM's step scores:
    the threshold is a best-F1 one on ``--val`` (F1 is constant for thresholds in ``(x_i, x_{i+1}]``
    between consecutive scores, so the scores themselves and one above the highest cover every value),
    and the test file's numbers at that threshold and at the natural one (0) are the plain loops'."""
    from purerl.config import PRMConfig
    from purerl.prm.loading import load_prm

    data, val, out = tmp_path / "steps.jsonl", tmp_path / "val.jsonl", tmp_path / "results.json"
    test_rows, val_rows = _write_task_solutions(data, n=40, seed=1), _write_task_solutions(val, n=24, seed=2)
    args = ["eval-prm", str(data), "--val", str(val), "--prm", str(prm_folder), "--batch-size", "8", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["prm_kind"] == "token_classification" and result["score_range"] == [-1.0, 1.0]

    prm = load_prm(PRMConfig(kind="token_classification", path=str(prm_folder)))  # as eval-prm loads it

    def scored(rows):  # in eval-prm's batches of 8 solutions, so the floats are the ones it saw
        batches = [rows[i : i + 8] for i in range(0, len(rows), 8)]
        return [s for b in batches for s in prm.score([r["prompt"] for r in b], [r["completions"] for r in b])]

    test_scores, val_scores = scored(test_rows), scored(val_rows)
    test_labels, val_labels = [r["labels"] for r in test_rows], [r["labels"] for r in val_rows]
    flat = sorted({x for s in val_scores for x in s})
    best = max(_plain_f1(val_scores, val_labels, t) for t in [*flat, flat[-1] + 1])
    t = result["threshold"]
    assert result["validation"]["f1"] == pytest.approx(best) == pytest.approx(_plain_f1(val_scores, val_labels, t))
    for m, at in ((result["test"], t), (result["natural"]["test"], 0.0)):
        assert m["f1"] == pytest.approx(_plain_f1(test_scores, test_labels, at))
        steps = [(x, ok) for s, lab in zip(test_scores, test_labels) for x, ok in zip(s, lab)]
        assert m["auroc"] == pytest.approx(_pairwise_auroc([x for x, _ in steps], [ok for _, ok in steps]))
        assert (m["solutions"], m["with_error"], m["nan_steps"]) == (40, sum(not all(lab) for lab in test_labels), 0)


def test_steps_past_the_prm_length_limit_are_nan_and_counted(tmp_path, bpe_tokenizer, capsys):
    from purerl.models.loading import TinyModelConfig, new_prm

    folder = tmp_path / "short_prm"
    new_prm(bpe_tokenizer, TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64, max_positions=40),
            seed=0).save_pretrained(folder)  # fmt: skip
    bpe_tokenizer.save_pretrained(folder)
    data, out = tmp_path / "steps.jsonl", tmp_path / "results.json"
    _write_task_solutions(data, n=12, seed=2)
    assert main(["eval-prm", str(data), "--prm", str(folder), "--threshold", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    m = result["test"]
    assert result["validation"] is None and result["threshold_from"] == "--threshold" and m["solutions"] == 12
    assert m["nan_steps"] > 0 and m["solutions_with_nan"] == result["prm_truncated_inputs"] > 0
    assert f"{m['nan_steps']} of {m['steps']} steps have no score" in capsys.readouterr().out


PROBLEM_1 = "Q: (5+2+3) mod 10\nA:\n"
PROBLEM_2 = "Q: (0+1-1) mod 10\nA:\n"
PROBLEM_3 = "Q: (9+3-2-3) mod 10\nA:\n"


def _step(*completions, chosen=None, human=None) -> dict:
    return {"completions": [{"text": t, "rating": r, "flagged": None} for t, r in completions],
            "human_completion": human, "chosen_completion": chosen}  # fmt: skip


PRM800K_ROWS = [
    # correct: the chosen completion at each step (a wrong alternative at step 1 is not followed)
    {"labeler": "a", "question": {"problem": PROBLEM_1, "ground_truth_answer": "0"},
     "label": {"steps": [_step(("5+2=7 (7+3)", 1), chosen=0), _step(("7+3=7", -1), ("7+3=0", 1), chosen=1),
                         _step(("The answer is \\boxed{0}.", 1), chosen=0)], "finish_reason": "solution"}},
    # none chosen at step 1, no human step: the first completion rated -1 ends it, an error at 1
    {"labeler": "b", "question": {"problem": PROBLEM_1},
     "label": {"steps": [_step(("5+2=7 (7+3)", 1), chosen=0), _step(("7+3=1", 0), ("7+3=7", -1))],
               "finish_reason": "found_error"}},
    # correct: a neutral first step (rating 0) and the human's completion at step 1
    {"labeler": "c", "question": {"problem": PROBLEM_2},
     "label": {"steps": [_step(("0+1=1 (1-1)", 0), chosen=0), _step(("1-1=2", -1), human={"text": "1-1=0"}),
                         _step(("The answer is \\boxed{0}.", 1), chosen=0)], "finish_reason": "solution"}},
    # an error at the first step; what follows is not labelled reliably, so the trajectory stops there
    {"labeler": "d", "question": {"problem": PROBLEM_3},
     "label": {"steps": [_step(("9+3=1 (1-2-3)", -1), chosen=0), _step(("1-2=9 (9-3)", 1), chosen=0)],
               "finish_reason": "found_error"}},
    {"labeler": "e", "question": {"problem": PROBLEM_3}, "label": {"steps": [], "finish_reason": "give_up"}},
]  # fmt: skip


def test_a_prm800k_fixture_through_format_prm800k(tmp_path, capsys):
    data, out = tmp_path / "phase2.jsonl", tmp_path / "results.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in PRM800K_ROWS))
    base = ["eval-prm", str(data), "--prm", "rule", "--format", "prm800k", "--out", str(out)]
    assert main([*base, "--threshold", "0"]) == 0
    result = json.loads(out.read_text())
    m = result["test"]
    assert (m["solutions"], m["with_error"], m["correct"], m["steps"], m["f1"]) == (4, 2, 2, 9, 1.0)
    assert result["skipped"] == {str(data): {"no rated step": 1}}
    assert "skipped in" in capsys.readouterr().out
    assert main([*base, "--val", str(data)]) == 0  # the threshold chosen on a --val file
    result = json.loads(out.read_text())
    assert result["threshold_from"] == f"the best F1 on --val {data}" and result["validation"]["f1"] == 1.0
    assert main([*base, "--threshold", "0", "--neutral", "drop"]) == 0  # the neutral step's solution skipped
    result = json.loads(out.read_text())
    assert result["test"]["solutions"] == 3 and result["skipped"][str(data)]["a neutral step (neutral=drop)"] == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--val-fraction", "0"], "--val-fraction must be in (0, 1), got 0.0"),
        (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--threshold", "nan"], "--threshold must be a finite number"),
        (["--format", "csv"], "--format 'csv': choose one of"),
        (["--val", "missing.jsonl"], "--val missing.jsonl: no such file or folder"),
        (["--out", "no/such/folder/r.json"], "--out no/such/folder/r.json: no such folder"),
        (["--prm", "no/such/prm"], "--prm 'no/such/prm': no such file or folder"),
        (["--prm-kind", "bogus"], "--prm-kind: unknown PRM kind 'bogus'"),
        (["--prm-kind", "rule"], "--prm-kind 'rule' has no model to load"),
        (["--score-map", "log"], "--score-map 'log': choose one of none, affine"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_anything_loads(tmp_path, capsys, prm_folder, extra, message):
    data = tmp_path / "steps.jsonl"
    data.write_text('{"prompt": "p", "completions": ["a"], "labels": "not a list"}\n')  # never read
    argv = ["eval-prm", str(data), "--prm", str(prm_folder), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl eval-prm: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _rows(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = {"prompt": PROBLEM_2, "completions": ["0+1=1 (1-1)"], "labels": [True]}
BAD = {"prompt": PROBLEM_2, "completions": ["0+1=2 (2-1)"], "labels": [False]}


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "no such file or folder"),
        (_rows(GOOD, {**GOOD, "labels": [True, False]}), [], "row 1: 1 steps but 2 labels"),
        (_rows({"prompt": "What is 2+2?", "completions": ["4"], "labels": [True]}), ["--threshold", "0"],
         "row 0: --prm rule checks the built-in arithmetic task's steps"),
        (_rows(GOOD), [], "1 solution(s) are too few to hold out --val-fraction 0.3; pass --threshold or --val"),
        (_rows(GOOD, GOOD, GOOD, GOOD), [], "the validation part: choosing a threshold needs solutions with an error"),
        (_rows({**GOOD, "completions": [], "labels": []}), [], "no labelled solution to evaluate"),
        (_rows(GOOD, BAD), ["--out", "."], "is a folder"),
    ],
)  # fmt: skip
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, content, extra, message):
    data = tmp_path / "steps.jsonl"
    if content is not None:
        data.write_text(content)
    assert main(["eval-prm", str(data), "--prm", "rule", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("purerl eval-prm: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


# Hand-made solutions of PROBLEM_2 / PROBLEM_1 (below), with a file's labels that disagree with the exact
# checker on purpose: the checker (--prm rule, scores +1 / -1) is then a PRM whose numbers are worked out
# by hand. (file labels, the checker's labels.)
HAND_RULE = [
    (["0+1=1 (1-1)", "1-1=0", "The answer is \\boxed{0}."], [True, True, True]),  # checker: T T T
    (["0+1=1 (1-1)", "1-1=2", "The answer is \\boxed{2}."], [True, False, False]),  # checker: T F T
    (["0+1=2 (2-1)", "2-1=1", "The answer is \\boxed{1}."], [True, True, False]),  # checker: F T T
    (["0+1=1 (1-1)", "1-1=0", "The answer is \\boxed{5}."], [True, True, True]),  # checker: T T F
]


def test_a_hand_made_set_gives_the_f1_and_auroc_worked_out_by_hand(tmp_path):
    """At threshold 0 the checker guesses the first errors -1, 1, 0, 2, -1; the file says -1, 1, 2, -1, -1.
    Solutions with an error: #2 found, #3 missed -> 1/2. Correct ones: #1 and #5 kept, #4 flagged -> 2/3.
    F1 = 2 (1/2)(2/3) / (1/2 + 2/3) = 4/7. Steps: 12 labelled correct (10 scored +1, 2 scored -1) and 3
    wrong (1 at -1, 2 at +1): of the 36 pairs, +1 beats -1 10 times, 20 ties at +1 and 2 at -1 count half,
    so AUROC = (10 + 10 + 1) / 36 = 7/12. With ``--val`` the same file chooses the threshold among -2, 0
    and 2 (F1 0, 4/7, 0): 0."""
    rows = [{"prompt": PROBLEM_2, "completions": steps, "labels": labels} for steps, labels in HAND_RULE]
    rows.append({"prompt": PROBLEM_1, "completions": ["5+2=7 (7+3)", "7+3=0", "The answer is \\boxed{0}."],
                 "labels": [True, True, True]})  # fmt: skip  # checker: T T T
    for row, checker in zip(rows, ([True] * 3, [True, False, True], [False, True, True], [True, True, False])):
        assert A.rule_checker(row["prompt"], row["completions"]) == checker  # the hand-worked scores hold
    data, out = tmp_path / "hand.jsonl", tmp_path / "results.json"
    data.write_text(_rows(*rows))
    for extra in (["--threshold", "0"], ["--val", str(data)]):
        assert main(["eval-prm", str(data), "--prm", "rule", "--out", str(out), *extra]) == 0
        result = json.loads(out.read_text())
        m = result["test"]
        assert result["threshold"] == 0.0
        assert (m["solutions"], m["with_error"], m["correct"], m["error_found"], m["correct_kept"]) == (5, 2, 3, 1, 2)
        assert (m["error_accuracy"], m["correct_accuracy"]) == (0.5, pytest.approx(2 / 3))
        assert m["f1"] == pytest.approx(4 / 7) and m["auroc"] == pytest.approx(7 / 12)
        assert m["steps"] == 15 and result["natural"]["test"]["f1"] == pytest.approx(4 / 7)
    assert result["validation"]["f1"] == pytest.approx(4 / 7)
