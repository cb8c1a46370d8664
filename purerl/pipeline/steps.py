"""Split responses into reasoning steps and locate each step's last token.

A response is split at a separator (default ``"\\n\\n"``; a regex when ``regex=True``). The PRM scores
the steps as text; credit needs, for each step, the index of its last token in the *policy's*
tokenisation (``step_ends``). Both come from the response text and the character offsets of its tokens,
never from scanning the vocabulary, so any tokenizer works and the PRM may use a different one.

Edge cases, decided once:

- Leading and trailing separators, and runs of separators, only delimit: pieces between them that are
  empty or whitespace-only are not steps. Every other piece is a step, its text kept verbatim (no
  strip), so ``text[step.start:step.end] == step.text``.
- Text after the last separator is the last step; a response with no separator is one step; an empty
  or whitespace-only response has zero steps.
- A step ends at the token holding its last non-whitespace character. A token that merges step text
  with the separator (``".\\n\\n"``) therefore ends its step, and separator tokens split from the text
  belong to the next step. Zero-width tokens (special tokens such as EOS) hold no character.
- The last step always ends at the response's last token (EOS included), as in DESIGN section 2.
- When two steps would end on the same token (one token spans the end of one step and the end of the
  next), the later step is merged into the earlier one, and the merged step's text is the verbatim
  span of both, separator included; ``step_ends`` stays strictly increasing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import accumulate
from typing import Any

import regex as rx
import torch

DEFAULT_SEPARATOR = "\n\n"
REGEX_TIMEOUT = 1.0
"""Seconds one split of a response at a separator regex may take: a user's pattern that backtracks
catastrophically (``(a|aa)+$`` on ``"aaa...!"``) stops with an error naming it instead of hanging."""


@dataclass(frozen=True)
class Step:
    """One step of a response: its verbatim text and its character span ``[start, end)``."""

    text: str
    start: int
    end: int


@dataclass
class StepBatch:
    """Steps of a batch of responses, ready for a PRM and for :mod:`purerl.algo.credit`.

    Attributes:
        steps: for each response, its steps as text (what the PRM scores).
        spans: for each response, its :class:`Step` objects (text and character spans).
        step_ends: (B, S) long, index of each step's last token; 0 on padded steps.
        step_mask: (B, S) bool, True for real steps. ``S >= 1`` even when no response has a step.
    """

    steps: list[list[str]]
    spans: list[list[Step]]
    step_ends: torch.Tensor
    step_mask: torch.Tensor

    @property
    def num_steps(self) -> torch.Tensor:
        """(B,) number of steps of each response."""
        return self.step_mask.sum(-1)

    def pack(self, scores: Sequence[Sequence[float]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Pack per-step scores (one list per response, one score per step) into (B, S), 0 padded."""
        if len(scores) != len(self.steps):
            raise ValueError(f"got scores for {len(scores)} responses, expected {len(self.steps)}")
        out = torch.zeros(self.step_mask.shape, dtype=dtype)
        for i, (row, steps) in enumerate(zip(scores, self.steps)):
            if len(row) != len(steps):
                raise ValueError(f"response {i}: {len(row)} scores for {len(steps)} steps")
            out[i, : len(row)] = torch.as_tensor(list(row), dtype=dtype)
        return out.to(self.step_mask.device)


@lru_cache(maxsize=64)
def _compile(separator: str, is_regex: bool) -> rx.Pattern:
    if not separator:
        raise ValueError("the step separator must not be empty")
    try:  # the `regex` package: re's syntax, plus a time limit on matching
        pattern = rx.compile(separator if is_regex else rx.escape(separator))
    except rx.error as err:
        raise ValueError(f"the step separator regex {separator!r} is not a valid regular expression ({err})") from None
    if pattern.match("") is not None:
        raise ValueError(f"the step separator regex {separator!r} matches the empty string")
    return pattern


def _finditer(pattern: rx.Pattern, text: str, separator: str) -> list:
    """Every match of ``pattern`` in ``text``, within :data:`REGEX_TIMEOUT` seconds in all."""
    try:
        return list(pattern.finditer(text, timeout=REGEX_TIMEOUT))
    except TimeoutError:
        raise ValueError(
            f"the step separator regex {separator!r} took over {REGEX_TIMEOUT:g} s on a response of "
            f"{len(text)} characters (it backtracks catastrophically); simplify it"
        ) from None


def split_steps(text: str, separator: str = DEFAULT_SEPARATOR, *, regex: bool = False) -> list[Step]:
    """Split ``text`` into steps at ``separator`` (see the module docstring for the edge cases).

    A separator regex that is invalid, matches the empty string, or takes over
    :data:`REGEX_TIMEOUT` seconds on ``text`` raises a one-line ``ValueError`` naming it.

    >>> [s.text for s in split_steps("\\n\\nAdd 2.\\n\\n\\n\\nSo 4.\\n\\n")]
    ['Add 2.', 'So 4.']
    >>> split_steps("  ")
    []
    """
    pattern = _compile(separator, regex)
    steps = []
    start = 0
    for match in _finditer(pattern, text, separator):
        if text[start : match.start()].strip():
            steps.append(Step(text[start : match.start()], start, match.start()))
        start = match.end()
    if text[start:].strip():
        steps.append(Step(text[start:], start, len(text)))
    return steps


def step_token_ends(
    text: str, steps: Sequence[Step], offsets: Sequence[tuple[int, int]]
) -> tuple[list[Step], list[int]]:
    """Map steps of ``text`` to the index of their last token.

    Args:
        text: the response text the offsets refer to.
        steps: its steps, from :func:`split_steps`.
        offsets: one ``(start, end)`` character span per response token (``end`` exclusive); zero-width
            spans for special tokens. Its length is the response's token count.
    Returns:
        ``(steps, ends)``: the steps after merging any that end on the same token, and strictly
        increasing token indices, the last one being ``len(offsets) - 1``. Steps whose last character
        no token covers (offsets shorter than the text) are dropped.
    """
    if not steps or not offsets:
        return [], []
    reach = []  # running maximum of token ends: reach[t] = first character not covered by tokens <= t
    best = 0
    for _, end in offsets:
        best = max(best, end)
        reach.append(best)
    merged: list[Step] = []
    ends: list[int] = []
    for step in steps:
        last_char = step.start + len(step.text.rstrip()) - 1
        token = bisect.bisect_right(reach, last_char)  # first token whose reach passes last_char
        if token >= len(offsets):
            break
        if ends and token <= ends[-1]:
            prev = merged[-1]
            merged[-1] = Step(text[prev.start : step.end], prev.start, step.end)
            continue
        merged.append(step)
        ends.append(token)
    if ends:
        ends[-1] = len(offsets) - 1
    return merged, ends


def segment(
    text: str,
    offsets: Sequence[tuple[int, int]],
    separator: str = DEFAULT_SEPARATOR,
    *,
    regex: bool = False,
) -> tuple[list[Step], list[int]]:
    """Split one response into steps and find each step's last token (see :func:`step_token_ends`)."""
    return step_token_ends(text, split_steps(text, separator, regex=regex), offsets)


def segment_batch(
    texts: Sequence[str],
    offsets: Sequence[Sequence[tuple[int, int]]],
    separator: str = DEFAULT_SEPARATOR,
    *,
    regex: bool = False,
    device: torch.device | str | None = None,
) -> StepBatch:
    """Segment a batch of responses into a :class:`StepBatch`.

    Args:
        texts: B response texts.
        offsets: B lists of per-token character spans, one span per response token (the tokens that
            ``response_mask`` marks, in order).
        separator, regex: see :func:`split_steps`.
        device: where to put ``step_ends`` and ``step_mask``.
    """
    if len(texts) != len(offsets):
        raise ValueError(f"got {len(texts)} texts but {len(offsets)} offset lists")
    spans, ends = [], []
    for text, offs in zip(texts, offsets):
        steps, token_ends = segment(text, offs, separator, regex=regex)
        spans.append(steps)
        ends.append(token_ends)
    width = max([1] + [len(e) for e in ends])
    step_ends = torch.zeros(len(texts), width, dtype=torch.long)
    step_mask = torch.zeros(len(texts), width, dtype=torch.bool)
    for i, row in enumerate(ends):
        step_ends[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        step_mask[i, : len(row)] = True
    return StepBatch(
        steps=[[s.text for s in row] for row in spans],
        spans=spans,
        step_ends=step_ends.to(device),
        step_mask=step_mask.to(device),
    )


def decode_with_offsets(
    tokenizer: Any, token_ids_batch: Sequence[Sequence[int]], window: int = 6
) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Decode generated token ids into text plus the character span of every token.

    Works for any Hugging Face tokenizer and for non-canonical tokenisations (sampled ids need not be
    what the tokenizer would produce from their text). Fast path: decode, re-encode with offsets, and
    keep the tokenizer's own offsets where re-encoding gives back the same ids. Otherwise each token's
    text is the difference between decoding a short window of ids ending with it and the same window
    without it; an incomplete UTF-8 character (decoded as U+FFFD) goes to the token that completes
    it. For a byte-level BPE (GPT-2, Qwen, Llama 3, SmolLM2) those windows are decoded from a table
    of each id's bytes, built once per tokenizer, wherever the table decodes the whole response to
    the tokenizer's own text; elsewhere the tokenizer decodes them (two decodes a token, slower).
    Special tokens (``tokenizer.all_special_ids``) are left out of the text and get zero-width spans.

    Args:
        tokenizer: a ``transformers`` fast tokenizer.
        token_ids_batch: B lists of response token ids (no padding).
        window: tokens of left context used to decode each token on the slow path.
    Returns:
        ``(texts, offsets)``: B response texts and B lists of ``(start, end)`` spans, one per id.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids_batch = [[int(i) for i in ids] for ids in token_ids_batch]
    contents = [[i for i in ids if i not in special] for ids in ids_batch]
    texts = tokenizer.batch_decode(contents, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    content_offsets: list[list[tuple[int, int]] | None] = [
        [tuple(o) for o in offs] if list(re_ids) == content else None
        for re_ids, offs, content in zip(enc["input_ids"], enc["offset_mapping"], contents)
    ]
    slow = [i for i, offs in enumerate(content_offsets) if offs is None]
    table = _byte_table(tokenizer) if slow else None
    by_bytes = [i for i in slow if table is not None and _decode_bytes(table, contents[i]) == texts[i]]
    by_tokenizer = sorted(set(slow) - set(by_bytes))
    for rows, windows in ((by_bytes, partial(_byte_windows, table)), (by_tokenizer, partial(_windows, tokenizer))):
        rows_ids = [contents[i] for i in rows]
        for i, (text, offs) in zip(rows, _window_offsets(windows(rows_ids, window), rows_ids)):
            texts[i], content_offsets[i] = text, offs
    offsets = []
    for ids, offs in zip(ids_batch, content_offsets):
        spans, it, pos = [], iter(offs), 0
        for i in ids:
            if i in special:
                spans.append((pos, pos))
            else:
                spans.append(next(it))
                pos = spans[-1][1]
        offsets.append(spans)
    return texts, offsets


@lru_cache(maxsize=8)
def _byte_table(tokenizer) -> tuple[bytes | None, ...] | None:
    """Each id's bytes for a byte-level BPE tokenizer (None for other tokenizers), built once."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.decoder).__name__ != "ByteLevel":
        return None
    to_byte = {ch: b for b, ch in _bytes_to_unicode().items()}
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    table: list[bytes | None] = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token is None or i in added or any(ch not in to_byte for ch in token):
            table.append(None)  # added tokens decode as their content: the tokenizer decodes them
        else:
            table.append(bytes(to_byte[ch] for ch in token))
    return tuple(table)


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (GPT-2's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(extra)}}


def _decode_bytes(table: Sequence[bytes | None], ids: Sequence[int]) -> str | None:
    """The text of ``ids`` from their bytes (invalid UTF-8 as U+FFFD, as the tokenizer's byte-level
    decoder does); None when an id is not in ``table``."""
    pieces = [table[i] if 0 <= i < len(table) else None for i in ids]
    return None if None in pieces else b"".join(pieces).decode("utf-8", "replace")


def _windows(tokenizer: Any, contents: Sequence[list[int]], window: int) -> list[str]:
    """For each token: the tokenizer's text of the ``window`` ids before it, then with it."""
    windows: list[list[int]] = []
    for ids in contents:
        for k in range(len(ids)):
            lo = max(0, k - window)
            windows += [ids[lo:k], ids[lo : k + 1]]
    if not windows:
        return []
    return tokenizer.batch_decode(windows, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _byte_windows(table: Sequence[bytes | None], contents: Sequence[list[int]], window: int) -> list[str]:
    """:func:`_windows` decoded from the ids' bytes (slices of each response's bytes, no tokenizer call)."""
    decoded = []
    for ids in contents:
        ends = list(accumulate(len(table[i]) for i in ids))
        starts = [0, *ends[:-1]]
        data = b"".join(table[i] for i in ids)
        for k in range(len(ids)):
            lo = starts[max(0, k - window)]
            decoded += [data[lo : starts[k]].decode("utf-8", "replace"), data[lo : ends[k]].decode("utf-8", "replace")]
    return decoded


def _window_offsets(decoded: Sequence[str], contents: Sequence[list[int]]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each token's text: the decoded window ending with it minus the same window without it (two
    entries of ``decoded`` a token); an incomplete character (U+FFFD at the end) goes to the token
    that completes it."""
    out, cursor = [], 0
    for ids in contents:
        pieces = []
        for _ in ids:
            before, after = decoded[cursor].rstrip("\ufffd"), decoded[cursor + 1].rstrip("\ufffd")
            pieces.append(after[len(before) :])
            cursor += 2
        spans, pos = [], 0
        for piece in pieces:
            spans.append((pos, pos + len(piece)))
            pos += len(piece)
        out.append(("".join(pieces), spans))
    return out
