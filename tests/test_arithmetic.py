"""The built-in task: deterministic, disjoint splits, exact step labels, grading."""

from __future__ import annotations

import random

import pytest

from purerl.prm.rule import RulePRM
from purerl.tasks import arithmetic as A

CFG = A.ArithmeticConfig(ops="+-*", error_rate=0.3, filler_rate=0.3)


def test_problems_are_deterministic_and_splits_disjoint():
    train = A.generate_problems(CFG, 300, "train", seed=1)
    assert train == A.generate_problems(CFG, 300, "train", seed=1)
    assert train != A.generate_problems(CFG, 300, "train", seed=2)
    heldout = A.generate_problems(CFG, 300, "heldout", seed=1)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    for p in train[:50]:
        assert CFG.min_ops <= len(p.ops) <= CFG.max_ops
        assert all(op in CFG.ops and 1 <= x <= CFG.max_operand for op, x in p.ops)
    with pytest.raises(ValueError, match="split must be"):
        A.generate_problems(CFG, 1, "test", seed=0)


def test_a_problem_by_hand():
    # (7+3-5*2) mod 10, left to right: 7+3=0, 0-5=5, 5*2=0.
    p = A.Problem(7, (("+", 3), ("-", 5), ("*", 2)))
    assert p.values == [0, 5, 0] and p.answer == "0"
    assert p.prompt == "Q: (7+3-5*2) mod 10\nA:\n"
    assert A.parse_prompt(p.prompt) == p
    assert A.reference_solution(p) == "7+3=0 (0-5*2)\n\n0-5=5 (5*2)\n\n5*2=0\n\nThe answer is \\boxed{0}."
    steps = ["7+3=0 (0-5*2)", "Let me check the last step.", "0-5=4 (4*2)", "4*2=8", "The answer is \\boxed{8}."]
    # Local labels: only the wrong step is wrong; the steps carrying on from what it wrote are correct.
    assert A.check_steps(p, steps) == [True, True, False, True, True]
    assert A.first_bad_chars(p, steps) == [None, None, 4, None, None]
    assert A.first_bad_chars(p, ["7+3=0 (0-5*2)", "0-5=5 (5*3)"]) == [None, 9]  # miscopied the rest
    assert A.check_steps(p, ["7+3=0 (0-5*2)", "0-5=5 (5*3)", "5*3=5"]) == [True, False, True]  # carries on
    assert A.check_steps(p, ["7+3=0 (0-5*2)", "The answer is \\boxed{0}."]) == [True, False]  # too early
    assert A.check_steps(p, ["7-3=4 (4-5*2)"]) == [False]  # another operation than the expression's first
    assert A.check_steps(p, ["6+3=9 (9-5*2)"]) == [False]  # did not start from the written value
    assert A.check_steps(p, ["7+3=0 (1-5*2)"]) == [False]  # did not carry its result
    assert A.check_steps(p, ["7+3=0"]) == [False]  # dropped what is left
    assert A.check_steps(p, ["7 + 3 = 0 (0-5*2)"]) == [False]  # not the step's exact form
    assert A.parse_op_step("7 + 3 = 0 (0 - 5*2)") == ((7, "+", 3, 0), 0, (("-", 5), ("*", 2)))
    assert A.parse_op_step("8+1=9") == ((8, "+", 1, 9), 9, ())
    assert A.parse_op_step("= (0-5*2)") is None


def test_borrowing_subtraction_misconception():
    # 1-3 mod 10 is 8; the misconception writes 3-1 = 2, and greedy decoding of data with
    # misconception_rate > 0.5 would follow it.
    p = A.Problem(1, (("-", 3), ("+", 1)))
    assert A.check_steps(p, ["1-3=2 (2+1)", "2+1=3", "The answer is \\boxed{3}."]) == [False, True, True]
    cfg = A.ArithmeticConfig(error_rate=0.0, filler_rate=0.0, misconception_rate=0.6)
    rng = random.Random(0)
    firsts = [A.sample_solution(p, rng, cfg)[0][0] for _ in range(2000)]
    assert set(firsts) == {"1-3=2 (2+1)", "1-3=8 (8+1)"}
    assert 0.55 < firsts.count("1-3=2 (2+1)") / len(firsts) < 0.65
    no_borrow = A.Problem(5, (("-", 3),))  # 5-3 = 2 needs no borrow: never miswritten
    assert {A.sample_solution(no_borrow, rng, cfg)[0][0] for _ in range(200)} == {"5-3=2"}


def test_sampled_labels_match_the_checker():
    rng = random.Random(0)
    for _ in range(2000):
        p = A.random_problem(rng, CFG)
        steps, labels = A.sample_solution(p, rng, CFG)
        assert A.check_steps(p, steps) == labels
        assert [b is None for b in A.first_bad_chars(p, steps)] == labels
        assert A.grade(A.SEPARATOR.join(steps), p) == (str(A.extract_answer(steps[-1])) == p.answer)


def test_dropped_ends_carry_on_consistently_and_are_wrong_at_one_step():
    """The PRM data's rewrite mistakes: a step drops the end of what is left, later steps follow it."""
    rng = random.Random(1)
    cfg = A.ArithmeticConfig(error_rate=0.5, filler_rate=0.0, misconception_rate=0.0)
    drops = 0
    for _ in range(1000):
        p = A.random_problem(rng, cfg)
        steps, labels = A.sample_solution(p, rng, cfg, rewrite_share=1.0, drop_share=1.0)
        assert A.check_steps(p, steps) == labels
        value, rest = p.start, p.ops
        for step, ok in zip(steps[:-1], labels):
            (start, op, x, _), value_left, rest_left = A.parse_op_step(step)
            assert (start, op, x) == (value, *rest[0])  # carries on from what was written
            if len(rest_left) < len(rest) - 1:  # dropped the end of what is left: wrong, once
                drops += 1
                assert not ok and rest_left == rest[1 : 1 + len(rest_left)]
            value, rest = value_left, rest_left
        assert rest == () and steps[-1] == f"The answer is \\boxed{{{value}}}."
    assert drops > 100
    # the warm start's data keeps its old mistakes: without drop_share a rewrite drops one operation at most
    for _ in range(300):
        p = A.random_problem(rng, cfg)
        rest = p.ops
        for step in A.sample_solution(p, rng, cfg, rewrite_share=1.0)[0][:-1]:
            rest_left = A.parse_op_step(step)[2]
            assert len(rest_left) >= len(rest) - 2
            rest = rest_left


def test_grading_and_rule_prm():
    p = A.Problem(2, (("+", 2),))
    assert A.grade("2+2=4\n\nThe answer is \\boxed{4}.", p) is True
    assert A.grade("The answer is \\boxed{5}.", p) is False
    assert A.grade("no answer here", p) is None
    assert A.grade("\\boxed{3} then \\boxed{ 4 }", p) is True  # the last box counts
    prm = RulePRM(A.rule_checker)
    assert prm.score([p.prompt], [["2+2=4", "The answer is \\boxed{4}."]]) == [[1.0, 1.0]]
    assert prm.score([p.prompt], [["2+2=5"]]) == [[-1.0]]
    with pytest.raises(ValueError, match="not a prompt of the arithmetic task"):
        A.parse_prompt("What is 2+2?")


def test_corrupted_steps_are_labelled_wrong():
    p = A.Problem(9, (("-", 2), ("+", 1)))
    # wrong operation (computed consistently), a fragment, an early answer
    assert A.check_steps(p, ["9+2=1 (1+1)", "1+1=2", "The answer is \\boxed{2}."]) == [False, True, True]
    assert A.check_steps(p, ["9-2=7 (7+1)", "6+1=7"]) == [True, False]
    assert A.check_steps(p, ["1}."]) == [False]
    assert A.check_steps(p, ["9-2=7 (7+"]) == [False]
    assert A.check_steps(p, ["Let me"]) == [False]  # not one of the filler steps: malformed
    assert A.check_steps(p, ["9-2=7 (7+1)", "The answer is \\boxed{7}."]) == [True, False]
    rng = random.Random(0)
    changed = 0
    for _ in range(300):
        q = A.random_problem(rng, CFG)
        steps, _ = A.sample_solution(
            q, rng, A.ArithmeticConfig(error_rate=0.0, filler_rate=0.0, misconception_rate=0.0)
        )
        corrupted = A.corrupt_solution(q, steps, rng, rate=0.5)
        labels = A.check_steps(q, corrupted)
        first = next((k for k, (b, a) in enumerate(zip(steps, corrupted)) if b != a), None)
        if first is None:
            assert all(labels)
            continue
        changed += 1
        assert all(labels[:first])  # untouched steps before the first mistake stay correct
        assert not labels[first]  # and the first changed step is wrong
    assert changed > 100
