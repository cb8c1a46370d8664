"""purerl.pipeline.steps: splitting edge cases, properties (hypothesis), and real byte-level BPE tokenizers."""

from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purerl.algo.credit import pure_advantages
from purerl.pipeline.steps import Step, decode_with_offsets, segment, segment_batch, split_steps

# --------------------------------------------------------------------------------------------------
# Splitting: the edge cases of the module docstring, one by one
# --------------------------------------------------------------------------------------------------

SPLIT_TABLE = [
    ("Add 2.\n\nSo 4.", ["Add 2.", "So 4."]),  # the plain case
    ("\n\nAdd 2.\n\nSo 4.\n\n", ["Add 2.", "So 4."]),  # leading / trailing separators only delimit
    ("Add 2.\n\n\n\n\n\nSo 4.", ["Add 2.", "So 4."]),  # a run of separators is one boundary
    ("Add 2.\n\n  \n\nSo 4.", ["Add 2.", "So 4."]),  # whitespace-only pieces are not steps
    ("Add 2.\n\n\nSo 4.", ["Add 2.", "\nSo 4."]),  # an odd newline stays with the text, verbatim
    ("Only one step, no separator.", ["Only one step, no separator."]),
    ("", []),  # empty response: zero steps
    ("  \n\n \n", []),  # whitespace-only response: zero steps
    ("A.\n\nB.\n\ntrailing text", ["A.", "B.", "trailing text"]),  # text after the last separator
]


@pytest.mark.parametrize(("text", "expected"), SPLIT_TABLE)
def test_split_table(text, expected):
    steps = split_steps(text)
    assert [s.text for s in steps] == expected
    for step in steps:
        assert text[step.start : step.end] == step.text


def test_custom_and_regex_separators():
    assert [s.text for s in split_steps("a ## b ## c", " ## ")] == ["a", "b", "c"]
    assert [s.text for s in split_steps("Step 1: a\nStep 2: b", r"\n(?=Step)", regex=True)] == [
        "Step 1: a",
        "Step 2: b",
    ]
    assert [s.text for s in split_steps("a.b", ".")] == ["a", "b"]  # not a regex unless asked
    with pytest.raises(ValueError, match="must not be empty"):
        split_steps("a", "")
    with pytest.raises(ValueError, match="matches the empty string"):
        split_steps("a", r"\n*", regex=True)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

PIECE = st.text(alphabet="ab12+=. ", min_size=1, max_size=12).filter(lambda s: s.strip())
SEPARATORS = st.sampled_from(["\n\n", " ## ", "<step>"])


@given(
    pieces=st.lists(PIECE, max_size=8),
    sep=SEPARATORS,
    runs=st.lists(st.integers(1, 3), min_size=8, max_size=8),
    lead=st.integers(0, 2),
    trail=st.integers(0, 2),
)
def test_steps_joined_back_give_the_text_minus_separators(pieces, sep, runs, lead, trail):
    text = sep * lead + "".join((sep * runs[k] if k else "") + piece for k, piece in enumerate(pieces)) + sep * trail
    steps = split_steps(text, sep)
    assert [s.text for s in steps] == pieces
    assert "".join(s.text for s in steps) == text.replace(sep, "")


@given(text=st.text(alphabet="ab.\n =", max_size=60), sep=st.sampled_from(["\n\n", "\n", "=="]))
def test_steps_cover_all_but_separators_and_blanks(text, sep):
    steps = split_steps(text, sep)
    previous_end = 0
    for k, step in enumerate(steps):
        assert text[step.start : step.end] == step.text and step.text.strip()
        gap = text[previous_end : step.start]
        assert not re.sub(re.escape(sep), "", gap).strip()  # only separators and whitespace between
        if k > 0:
            assert sep in gap
        assert sep not in step.text
        previous_end = step.end
    assert not re.sub(re.escape(sep), "", text[previous_end:]).strip()


# --------------------------------------------------------------------------------------------------
# Steps to policy tokens, with real tokenizers
# --------------------------------------------------------------------------------------------------


def _encode(tokenizer, text):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def _check_ends(text, steps, ends, offsets):
    assert len(steps) == len(ends)
    assert all(a < b for a, b in zip(ends, ends[1:])), ends  # strictly increasing
    assert all(0 <= e < len(offsets) for e in ends)  # inside the response
    if ends:
        assert ends[-1] == len(offsets) - 1  # the last step ends at the last token
    for step, end in zip(steps[:-1], ends[:-1]):
        last_char = step.start + len(step.text.rstrip()) - 1
        start, stop = offsets[end]
        assert start <= last_char < stop, (step, offsets[end])  # that token holds the step's last char


def test_separator_token_after_the_text(bpe_tokenizer):
    # GPT-2 style pre-tokenisation: "." and "\n\n" are separate tokens; the step ends at ".".
    text = "Add 5 to 7: 7+5=12.\n\nThe answer is \\boxed{12}."
    ids, offsets = _encode(bpe_tokenizer, text)
    tokens = bpe_tokenizer.convert_ids_to_tokens(ids)
    steps, ends = segment(text, offsets)
    assert [s.text for s in steps] == ["Add 5 to 7: 7+5=12.", "The answer is \\boxed{12}."]
    assert tokens[ends[0]] == "." and tokens[ends[0] + 1].startswith("Ċ")
    _check_ends(text, steps, ends, offsets)


def test_separator_merged_into_a_token_with_text(merged_bpe_tokenizer):
    # Merges across whitespace: a token such as ".\n\nAdd" holds the end of one step and the start of
    # the next; it ends the earlier step (it holds that step's last character).
    text = "Add 5 to 7: 7+5=12.\n\nAdd 1 to 12: 12+1=13.\n\nThe answer is \\boxed{13}."
    ids, offsets = _encode(merged_bpe_tokenizer, text)
    tokens = merged_bpe_tokenizer.convert_ids_to_tokens(ids)
    assert any(t.startswith(".ĊĊ") and len(t) > 3 for t in tokens), tokens  # the case under test exists
    steps, ends = segment(text, offsets)
    assert len(steps) == 3
    assert tokens[ends[0]].startswith(".ĊĊ") and tokens[ends[1]].startswith(".ĊĊ")
    _check_ends(text, steps, ends, offsets)


def test_separator_split_across_two_tokens(bpe_tokenizer):
    # A sampled (non-canonical) sequence may write "\n\n" as two "\n" tokens: both belong to the next step.
    first, second = (
        bpe_tokenizer("Add 5.", add_special_tokens=False)["input_ids"],
        bpe_tokenizer("So 5.", add_special_tokens=False)["input_ids"],
    )
    newline = bpe_tokenizer.convert_tokens_to_ids("Ċ")
    ids = [*first, newline, newline, *second, bpe_tokenizer.eos_token_id]
    (text,), (offsets,) = decode_with_offsets(bpe_tokenizer, [ids])
    assert text == "Add 5.\n\nSo 5."
    steps, ends = segment(text, offsets)
    assert [s.text for s in steps] == ["Add 5.", "So 5."]
    assert ends == [len(first) - 1, len(ids) - 1]  # the second step runs through EOS
    assert offsets[-1][0] == offsets[-1][1] == len(text)  # EOS is zero-width


def test_steps_ending_on_the_same_token_are_merged():
    # Hand-made offsets: token 1 covers "a.\n\nb" (the end of step 1 and all of step 2).
    text = "xa.\n\nb\n\nc"
    offsets = [(0, 1), (1, 6), (6, 8), (8, 9)]
    steps, ends = segment(text, offsets)
    assert steps == [Step("xa.\n\nb", 0, 6), Step("c", 8, 9)]
    assert ends == [1, 3]


def test_offsets_shorter_than_the_text_drop_uncovered_steps():
    steps, ends = segment("a\n\nb\n\nc", [(0, 1), (1, 3), (3, 4)])  # nothing covers "c"
    assert [s.text for s in steps] == ["a", "b"] and ends == [0, 2]
    assert segment("", []) == ([], [])
    assert segment("  ", [(0, 2)]) == ([], [])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), sep_run=st.integers(1, 3), lead=st.booleans(), trail=st.booleans())
def test_step_ends_properties_on_real_tokenizers(bpe_tokenizer, merged_bpe_tokenizer, seed, sep_run, lead, trail):
    rng = random.Random(seed)
    pieces = [
        rng.choice(["Add 3 to 4: 4+3=7.", "So x = 12", "Check: 7 - 3 = 4 .", "é∑ ok", "Thus 9"])
        for _ in range(rng.randint(0, 6))
    ]
    text = ("\n\n" if lead else "") + ("\n\n" * sep_run).join(pieces) + ("\n\n" if trail else "")
    for tokenizer in (bpe_tokenizer, merged_bpe_tokenizer):
        ids, offsets = _encode(tokenizer, text)
        steps, ends = segment(text, offsets)
        _check_ends(text, steps, ends, offsets)
        assert len(steps) <= len(pieces)
        if tokenizer is bpe_tokenizer:
            assert [s.text for s in steps] == pieces  # no token crosses a separator: nothing merges
        # Generated ids, EOS included, give the same text and (for canonical ids) the tokenizer's offsets.
        (decoded,), (gen_offsets,) = decode_with_offsets(tokenizer, [[*ids, tokenizer.eos_token_id]])
        assert decoded == text
        assert gen_offsets[:-1] == offsets


def test_decode_with_offsets_on_byte_split_ids(bpe_tokenizer):
    # Every token spelled as single bytes (far from canonical), with multi-byte UTF-8 characters.
    text = "Add é to ∑.\n\nSo ∑é."
    canonical, _ = _encode(bpe_tokenizer, text)
    byte_ids = [
        bpe_tokenizer.convert_tokens_to_ids(ch) for tok in bpe_tokenizer.convert_ids_to_tokens(canonical) for ch in tok
    ]
    (decoded,), (offsets,) = decode_with_offsets(bpe_tokenizer, [byte_ids])
    assert decoded == text
    assert offsets[-1][1] == len(text)
    assert all(a[1] <= b[0] for a, b in zip(offsets, offsets[1:]))
    steps, ends = segment(decoded, offsets)
    _check_ends(decoded, steps, ends, offsets)
    assert [s.text for s in steps] == ["Add é to ∑.", "So ∑é."]


def test_segment_batch_feeds_credit(bpe_tokenizer):
    texts = ["Add 1 to 2: 2+1=3.\n\nThe answer is \\boxed{3}.", "", "Just one step"]
    ids = [bpe_tokenizer(t, add_special_tokens=False)["input_ids"] + [bpe_tokenizer.eos_token_id] for t in texts]
    decoded, offsets = decode_with_offsets(bpe_tokenizer, ids)
    batch = segment_batch(decoded, offsets)
    assert batch.steps == [["Add 1 to 2: 2+1=3.", "The answer is \\boxed{3}."], [], ["Just one step"]]
    assert batch.step_mask.tolist() == [[True, True], [False, False], [True, False]]
    assert batch.num_steps.tolist() == [2, 0, 1]
    lengths = [len(i) for i in ids]
    assert batch.step_ends[0, 1].item() == lengths[0] - 1 and batch.step_ends[2, 0].item() == lengths[2] - 1
    width = max(lengths)
    response_mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    step_rewards = batch.pack([[0.9, -0.4], [], [0.2]])
    adv, ret = pure_advantages(
        step_rewards, batch.step_mask, batch.step_ends, response_mask, torch.tensor([0, 0, 0]), mode="min"
    )
    assert ret[0, 0].item() == pytest.approx(-0.4) and ret[0, lengths[0] - 1].item() == pytest.approx(-0.4)
    assert (ret[1] == 0).all() and ret[2, 0].item() == pytest.approx(0.2)
    assert torch.isfinite(adv).all()
    with pytest.raises(ValueError, match="response 0: 1 scores for 2 steps"):
        batch.pack([[0.1], [], [0.2]])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_byte_table_offsets_equal_the_window_decoding_on_random_ids(bpe_tokenizer, merged_bpe_tokenizer, seed):
    """Random ids (a random policy's, far from canonical, byte tokens and broken UTF-8 included): the
    byte table decodes them to the tokenizer's own text, and decode_with_offsets gives exactly the
    texts and spans of the window decoding done by the tokenizer (the reference)."""
    from purerl.pipeline.steps import _byte_table, _byte_windows, _decode_bytes, _window_offsets, _windows

    rng = random.Random(seed)
    for tokenizer in (bpe_tokenizer, merged_bpe_tokenizer):
        table = _byte_table(tokenizer)
        assert table is not None
        special = set(tokenizer.all_special_ids)
        normal = [i for i in range(len(tokenizer)) if i not in special]
        rows = [[rng.choice(normal) for _ in range(rng.randint(1, 40))] for _ in range(8)]
        rows.append([tokenizer.convert_tokens_to_ids(ch) for ch in tokenizer.convert_ids_to_tokens(
            tokenizer("é∑ ok", add_special_tokens=False)["input_ids"])[0]])  # bytes of "é" split  # fmt: skip
        texts = tokenizer.batch_decode(rows, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert [_decode_bytes(table, ids) for ids in rows] == texts
        assert _byte_windows(table, rows, 6) == _windows(tokenizer, rows, 6)  # every window, decoded alike
        reference = _window_offsets(_windows(tokenizer, rows, 6), rows)
        got_texts, got_spans = decode_with_offsets(tokenizer, [[*ids, tokenizer.eos_token_id] for ids in rows])
        for ids, text, spans, (window_text, window_spans) in zip(rows, got_texts, got_spans, reference):
            if tokenizer(text, add_special_tokens=False)["input_ids"] != ids:  # not the re-encoding path
                assert text == window_text and spans[:-1] == window_spans


def test_offsets_fall_back_to_the_tokenizer_for_other_tokenizers(bpe_tokenizer):
    from purerl.pipeline.steps import _byte_table, _decode_bytes

    assert _byte_table(object()) is None
    table = _byte_table(bpe_tokenizer)
    assert _decode_bytes(table, bpe_tokenizer("Add 5.", add_special_tokens=False)["input_ids"]) == "Add 5."
    assert _decode_bytes(table, [len(table) + 5]) is None  # an id outside the vocabulary
