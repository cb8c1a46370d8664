"""The token-classification PRM adapter and two-stage training, on a tiny model saved and reloaded."""

from __future__ import annotations

import math
import random

import pytest
import torch

from purerl.models.builtin_prm import prm_examples
from purerl.models.loading import TinyModelConfig, load_prm_model, new_prm
from purerl.models.prm_stages import PRMStagesConfig, _batch, train_prm
from purerl.prm import PRMS
from purerl.prm.token_classification import TokenClassificationPRM, batch_prm_inputs, build_prm_inputs
from purerl.tasks import arithmetic as A


def test_scores_match_a_hand_computation_from_logits(prm_folder):
    model, tokenizer = load_prm_model(prm_folder)  # the path a downloaded PRM takes
    prm = PRMS["token_classification"](model, tokenizer)
    prompts = ["Q: 1 +2 (mod 10)\nA:\n", "Q: 3 -1 (mod 10)\nA:\n", "Q: 5 +1 (mod 10)\nA:\n"]
    steps = [["1+2=3", "The answer is \\boxed{3}."], [], ["5+1=6", "odd\nnewline", "x", "The answer is \\boxed{6}."]]
    scores = prm.score(prompts, steps)
    assert [len(s) for s in scores] == [2, 0, 4]
    for prompt, row, got in zip(prompts, steps, scores):
        ids, markers, _ = build_prm_inputs(tokenizer, prompt, row)
        assert all(tokenizer.convert_ids_to_tokens(ids[m]) == "Ċ" for m in markers)
        with torch.no_grad():
            probs = model(input_ids=torch.tensor([ids])).logits[0].softmax(-1)
        expected = [(probs[m, 1] - probs[m, 0]).item() for m in markers]
        assert got == pytest.approx(expected, abs=1e-5)
        assert all(-1 <= s <= 1 for s in got)
    # Bucketing by length must not change any score: one response per batch gives the same numbers.
    single = TokenClassificationPRM(model, tokenizer, batch_tokens=1)
    for a, b in zip(single.score(prompts, steps), scores):
        assert a == pytest.approx(b, abs=1e-5)


def test_inputs_longer_than_the_limit_are_cut_and_counted(prm_folder, caplog):
    model, tokenizer = load_prm_model(prm_folder)
    prm = TokenClassificationPRM(model, tokenizer, max_length=24)
    steps = [[f"{k}+1={k + 1}" for k in range(8)]]
    scores = prm.score(["Q: 0 +1 (mod 10)\nA:\n"], steps)
    assert len(scores[0]) == 8  # one entry per step; the steps cut off are NaN (no score, masked)
    scored = [not math.isnan(s) for s in scores[0]]
    assert scored[0] and not scored[-1] and scored == sorted(scored, reverse=True)
    assert prm.truncated == 1 and "cut to 24" in caplog.text


def test_two_stage_training_learns_dense_labels(bpe_tokenizer):
    torch.manual_seed(0)
    model = new_prm(bpe_tokenizer, TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64), seed=0)
    head_before = model.score.weight.detach().clone()
    body_before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    sample = prm_examples(A.ArithmeticConfig(), error_rate=0.3)
    _, _, labels = _batch(bpe_tokenizer, [sample(random.Random(1))], "\n")
    assert (labels != -100).sum() > len(sample(random.Random(1))[1])  # every step token is labelled
    losses = train_prm(model, bpe_tokenizer, sample, PRMStagesConfig(head_steps=3, full_steps=30, batch_size=16))
    assert len(losses) == 33
    assert sum(losses[-5:]) < sum(losses[:5])
    assert not torch.equal(head_before, model.score.weight)
    assert not torch.equal(body_before, model.model.layers[0].mlp.up_proj.weight)


@pytest.mark.parametrize("separator", ["\n", "\n\n", " ки"])
def test_batched_prm_inputs_equal_the_piece_by_piece_ones(bpe_tokenizer, merged_bpe_tokenizer, separator):
    """One batched tokenizer call gives the ids and markers of tokenizing every piece on its own:
    repeated prompts, empty responses, steps holding newlines and non-ASCII text included."""
    rng = random.Random(0)
    words = ["Add 3 to 4: 4+3=7.", "so\nx = 12", "é∑ ok", "  ", "The answer is \\boxed{7}."]
    prompts = [rng.choice(["Q: (3+4) mod 10\nA:\n", "What is 7?", ""]) for _ in range(24)]
    steps = [[rng.choice(words) for _ in range(rng.randint(0, 5))] for _ in prompts]
    for tokenizer in (bpe_tokenizer, merged_bpe_tokenizer):
        expected = [build_prm_inputs(tokenizer, p, s, separator)[:2] for p, s in zip(prompts, steps)]
        assert batch_prm_inputs(tokenizer, prompts, steps, separator) == [tuple(e) for e in expected]
    assert batch_prm_inputs(bpe_tokenizer, [], [], separator) == []
