"""purerl.commands.bon: aggregations, votes and selections checked by hand on real sampled responses."""

from __future__ import annotations

import json
import math

import pytest

from purerl.commands.bon import aggregate, answer_classes, bon_accuracy, group_sizes, make_question, select
from tests.conftest import SHARED_DATA

GRADED = SHARED_DATA / "graded" / "math_cot_100.jsonl"


def test_aggregations_by_hand():
    r = [0.9, -0.5, 0.2]
    assert aggregate(r, "min") == -0.5
    assert aggregate(r, "last") == 0.2
    assert aggregate(r, "mean") == pytest.approx(0.2)
    assert aggregate(r, "product") == pytest.approx(0.95 * 0.25 * 0.6)
    assert aggregate([0.3, 0.7], "product", score_range=(0.0, 1.0)) == pytest.approx(0.21)
    # soft_min_sum = sum_j softmax(-r/0.1)_j r_j
    w = [math.exp(-x / 0.1) for x in r]
    assert aggregate(r, "soft_min_sum") == pytest.approx(sum(wi * x for wi, x in zip(w, r)) / sum(w))
    assert aggregate([], "min") == -math.inf
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate(r, "max")


def test_answer_classes_group_equivalent_answers():
    assert answer_classes(["0.5", r"\frac12", "3", None, r"\frac{1}{2}"]) == [0, 0, 1, -1, 0]
    assert group_sizes(8) == [1, 2, 4, 8] and group_sizes(6) == [1, 2, 4, 6]


def test_prm_votes_and_picks_on_a_made_up_question():
    responses = [r"\boxed{1}", r"\boxed{2}", r"\boxed{2}", r"\boxed{3}"]
    steps = [[0.9, 0.8], [0.1, -0.9], [0.5, -0.2], [0.95, 0.9]]
    q = make_question(responses, [True, False, False, False], step_scores=steps)
    idx = [0, 1, 2, 3]
    assert select(q, idx, "majority") == 1  # "2" twice
    assert select(q, idx, "min") == 3 and select(q, idx, "last") == 3
    # weighted by min mapped to [0, 1]: "1": 0.9, "2": 0.05 + 0.4 = 0.45, "3": 0.95
    assert select(q, idx, "weighted_min") == 3
    assert select(q, [0, 1, 2], "weighted_min") == 0


@pytest.mark.skipif(not GRADED.exists(), reason=f"shared data not found at {GRADED} (set PURERL_SHARED_DATA)")
def test_majority_and_outcome_score_picks_checked_by_hand():
    rows = {r["idx"]: r for r in map(json.loads, GRADED.read_text().splitlines())}

    def question(i):
        r = rows[i]
        return make_question(r["response"], r["score"], outcome_scores=[s[0] for s in r["pred_score"]])

    # question 28 (gold 4): answers 11 11 4 15 4 2 3 13; "11" and "4" tie at two votes, "11" came first;
    # the highest outcome score (0.365) is response 1, an "11": both picks are wrong at N=8
    q = question(28)
    assert select(q, list(range(8)), "majority") == 0 and not q.candidates[0].correct
    assert select(q, list(range(8)), "score") == 1
    # in pairs: (11, 11) wrong, (4, 15) right, (4, 2) right, (3, 13) wrong for both methods
    assert bon_accuracy([q], ["majority", "score"])["majority"][2] == 0.5
    assert bon_accuracy([q], ["majority", "score"])["score"][2] == 0.5
    # question 98 (gold 50,625): "50625" has four votes (right); the top score 2.297 is "759375" (wrong)
    q = question(98)
    assert q.candidates[select(q, list(range(8)), "majority")].correct
    assert not q.candidates[select(q, list(range(8)), "score")].correct
    # question 6 (gold 3/8): three votes for 3/8 and its top score 0.363 (response 2): both right
    q = question(6)
    assert select(q, list(range(8)), "score") == 2
    assert q.candidates[select(q, list(range(8)), "majority")].correct
    table = bon_accuracy([question(i) for i in (28, 98, 6)], ["majority", "score"])
    assert table["majority"][8] == pytest.approx(2 / 3) and table["score"][8] == pytest.approx(1 / 3)
    assert table["oracle"][8] == 1.0
