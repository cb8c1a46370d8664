"""The public PRM formats on tiny models built locally with each format's conventions, saved and loaded
through `from_pretrained` like a downloaded model; scores checked by hand from the logits. Also: a PRM
whose tokenizer differs from the policy's gives the same step rewards (steps travel as text)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
)

from purerl.config import PRMConfig
from purerl.models.loading import load_prm_model
from purerl.pipeline.steps import decode_with_offsets, segment_batch
from purerl.prm import PRMS
from purerl.prm.batching import map_scores
from purerl.prm.loading import load_prm
from tests.conftest import arithmetic_solution

PROMPTS = ["What is 2+3?", "Add 40 and 2."]
STEPS = [["2+3=5.", "The answer is \\boxed{5}."], ["40+2=42.", "So 42.", "The answer is \\boxed{42}."]]


def test_qwen_prm_reads_p_positive_at_each_extra_0(qwen_prm_folder):
    model, tok = load_prm_model(qwen_prm_folder)
    prm = PRMS["qwen_prm"](model, tok, system="Please reason step by step.")
    assert prm.score_range == (0.0, 1.0)
    scores = prm.score(PROMPTS, STEPS)
    for prompt, steps, got in zip(PROMPTS, STEPS, scores):
        # by hand: the chat text, its ids, the logits at each <extra_0>
        text = (f"<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
                f"<|im_start|>assistant\n{''.join(s + '<extra_0>' for s in steps)}<|im_end|>\n")  # fmt: skip
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pos = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids("<extra_0>")]
        assert len(pos) == len(steps)
        with torch.no_grad():
            probs = model(input_ids=torch.tensor([ids])).logits[0].softmax(-1)
        assert got == pytest.approx([probs[p, 1].item() for p in pos], abs=1e-5)
        assert all(0 <= s <= 1 for s in got)
    affine = PRMS["qwen_prm"](model, tok, system="Please reason step by step.", score_map="affine")
    assert affine.score_range == (-1.0, 1.0)
    flat = [2 * s - 1 for row in scores for s in row]
    assert [s for row in affine.score(PROMPTS, STEPS) for s in row] == pytest.approx(flat)


def test_math_shepherd_compares_plus_and_minus_at_each_tag(shepherd_folder):
    model = AutoModelForCausalLM.from_pretrained(shepherd_folder)
    tok = AutoTokenizer.from_pretrained(shepherd_folder)
    prm = PRMS["math_shepherd"](model, tok)
    scores = prm.score(PROMPTS, STEPS)
    tag = tok.convert_tokens_to_ids("ки")
    plus, minus = (
        tok(" +", add_special_tokens=False)["input_ids"][-1],
        tok(" -", add_special_tokens=False)["input_ids"][-1],
    )
    for prompt, steps, got in zip(PROMPTS, STEPS, scores):
        text = prompt + " " + "\n".join(f"{s} ки" for s in steps)
        ids = tok(text)["input_ids"]
        pos = [i for i, t in enumerate(ids) if t == tag]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        expected = [torch.softmax(logits[p, [plus, minus]], -1)[0].item() for p in pos]
        assert got == pytest.approx(expected, abs=1e-5)
    # the loader the trainer and `purerl bon` use picks the causal-LM head for this format
    spec = PRMConfig(kind="math_shepherd", path=str(shepherd_folder), score_map="affine")
    loaded = load_prm(spec).score(PROMPTS, STEPS)
    assert [s for row in loaded for s in row] == pytest.approx([2 * s - 1 for row in scores for s in row], abs=1e-5)


def test_score_map_and_batching_do_not_change_scores(qwen_prm_folder):
    model, tok = load_prm_model(qwen_prm_folder)
    one_by_one = PRMS["qwen_prm"](model, tok, batch_tokens=1)  # every response alone
    batched = PRMS["qwen_prm"](model, tok)
    alone = [s for row in one_by_one.score(PROMPTS, STEPS) for s in row]
    assert alone == pytest.approx([s for row in batched.score(PROMPTS, STEPS) for s in row], abs=1e-5)
    assert map_scores([[0.0, 0.25, 1.0]], "affine", (0.0, 1.0)) == [[-1.0, -0.5, 1.0]]
    with pytest.raises(ValueError, match="unknown score_map"):
        map_scores([[0.5]], "sigmoid", (0.0, 1.0))


def test_truncated_steps_get_no_score(qwen_prm_folder, caplog):
    model, tok = load_prm_model(qwen_prm_folder)
    prm = PRMS["qwen_prm"](model, tok, max_length=120)
    (row,) = prm.score(["What?"], [[f"{k}+1={k + 1}." for k in range(10)]])
    assert len(row) == 10 and math.isnan(row[-1]) and not math.isnan(row[0])
    assert prm.truncated == 1 and "get no score" in caplog.text


def test_a_prm_with_another_tokenizer_gives_the_same_step_rewards(prm_folder, bpe_tokenizer, merged_bpe_tokenizer):
    """The PRM (its own tokenizer = the first policy's) scores the same text whichever tokenizer the
    policy has; each step's reward lands on the policy token that ends the step."""
    model, prm_tok = load_prm_model(prm_folder)
    prm = PRMS["token_classification"](model, prm_tok)
    rng = random.Random(3)
    texts = [arithmetic_solution(rng) for _ in range(6)]
    prompts = ["Q: add\nA:\n"] * len(texts)
    results = []
    for policy_tok in (bpe_tokenizer, merged_bpe_tokenizer):  # shared with the PRM, then a different one
        ids = [policy_tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        decoded, offsets = decode_with_offsets(policy_tok, ids)
        steps = segment_batch(decoded, offsets, "\n\n")
        rewards = steps.pack(prm.score(prompts, steps.steps))
        for i in range(len(decoded)):
            for j in range(len(steps.steps[i])):
                start, end = offsets[i][steps.step_ends[i, j]]
                assert start < steps.spans[i][j].end <= end  # the token holding the step's last character
        results.append((decoded, steps.steps, rewards))
    assert len(bpe_tokenizer(texts[0])["input_ids"]) != len(merged_bpe_tokenizer(texts[0])["input_ids"])
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert torch.equal(results[0][2], results[1][2])
