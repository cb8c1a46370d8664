"""The ``token_classification`` PRM format (PURE-PRM-7B, TRL PRMTrainer models).

Input: the prompt, then each step followed by a separator (default ``"\\n"``); the score of a step is
``p(1) - p(0)`` of the 2-label head at the separator's last token, in [-1, 1]. Pieces are tokenised
separately and concatenated, so a step never merges with its separator into one token.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from purerl.config.separators import check_separator
from purerl.prm.batching import ModelPRM, bucketed_scores

log = logging.getLogger(__name__)


def build_prm_inputs(
    tokenizer, prompt: str, steps: Sequence[str], separator: str = "\n"
) -> tuple[list[int], list[int], list[list[tuple[int, int]]]]:
    """One response as PRM input: the prompt, then ``step + separator`` for each step.

    Returns ``(input_ids, marker_positions, step_tokens)``: the ids, the position of each step's
    separator token (where its score is read), and for each step the ``(position, char_end)`` of its
    own tokens (char_end within the step text as given, for per-token training labels).
    """
    sep_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    markers, step_tokens = [], []
    for step in steps:
        text = step.replace("\n", " ")  # the separator must not appear inside a step; same length
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        step_tokens.append([(len(ids) + k, end) for k, (_, end) in enumerate(enc["offset_mapping"])])
        ids += enc["input_ids"] + sep_ids
        markers.append(len(ids) - 1)
    return ids, markers, step_tokens


def batch_prm_inputs(
    tokenizer, prompts: Sequence[str], steps: Sequence[Sequence[str]], separator: str = "\n"
) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, marker_positions)`` of each response, equal to :func:`build_prm_inputs`'s, with
    every distinct prompt and every step tokenized in one batched call (a training batch repeats each
    prompt K times and holds hundreds of steps: one call instead of one per piece)."""
    sep_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    unique = list(dict.fromkeys(prompts))
    texts = unique + [step.replace("\n", " ") for row in steps for step in row]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    prompt_ids = dict(zip(unique, encoded))
    pieces = iter(encoded[len(unique) :])
    out = []
    for prompt, row in zip(prompts, steps):
        ids, markers = list(prompt_ids[prompt]), []
        for _ in row:
            ids += next(pieces) + sep_ids
            markers.append(len(ids) - 1)
        out.append((ids, markers))
    return out


class TokenClassificationPRM(ModelPRM):
    """A ``*ForTokenClassification`` model with 2 labels (1 = correct step); scores in [-1, 1].

    Without ``prm.path`` this kind is the built-in task's PRM (trained once and cached, or shipped).
    """

    kind = "token_classification"
    options = ("separator",)
    score_range = (-1.0, 1.0)

    def __init__(
        self, model, tokenizer, separator: str = "\n", batch_tokens: int = 16384, max_length: int | None = None
    ):
        super().__init__(model, tokenizer, batch_tokens, max_length)
        self.separator = separator

    @classmethod
    def check_config(cls, spec, task) -> None:
        check_separator("prm.separator", spec.separator, "\n")
        if not spec.path and getattr(task, "rule_checker", None) is None:  # a path, or the built-in PRM
            _warn_builtin_prm()
        recorded = _recorded_separator(spec.path)
        if recorded is not None and recorded != spec.separator:
            raise ValueError(
                f"prm.separator={spec.separator!r}, but {spec.path}/purerl_prm.json records that this PRM reads "
                f"its scores at {recorded!r} after each step (train-prm's separator); scores read elsewhere are "
                f"not the ones it learned: set prm.separator to {recorded!r}"
            )

    def inputs(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[tuple[list[int], list]]:
        """``(ids, marker positions)`` of each response, cut at the length limit."""
        return [self.truncation(ids, markers) for ids, markers in batch_prm_inputs(self.tokenizer, prompts, steps,
                                                                                    self.separator)]  # fmt: skip

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        items = self.inputs(prompts, steps)
        return bucketed_scores(self.model, items, self.tokenizer.pad_token_id, self.batch_tokens, _p1_minus_p0)

    @staticmethod
    def log_odds(logits):
        """(b, t) log-odds that the step ending at each position is correct: logit(1) - logit(0)."""
        return logits[..., 1] - logits[..., 0]


def _recorded_separator(path: str | None) -> str | None:
    """The separator a ``purerl train-prm`` folder records in its ``purerl_prm.json`` (None: none recorded)."""
    if not path:
        return None
    meta = Path(path) / "purerl_prm.json"
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get("separator")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _p1_minus_p0(logits):
    probs = logits.softmax(-1)
    return probs[..., 1] - probs[..., 0]


@functools.cache
def _warn_builtin_prm() -> None:
    """Once a process: every route checks the PRM spec more than once (the config, then the loader)."""
    log.warning(
        "prm.path is empty: the built-in PRM, trained on the arithmetic task, scores this task's steps; "
        "set prm.path to a PRM for it"
    )
