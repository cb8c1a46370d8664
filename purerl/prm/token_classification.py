"""The ``token_classification`` PRM format (PURE-PRM-7B, TRL PRMTrainer models).

Input: the prompt, then each step followed by a separator (default ``"\\n"``); the score of a step is
``p(1) - p(0)`` of the 2-label head at the separator's last token, in [-1, 1]. Pieces are tokenised
separately and concatenated, so a step never merges with its separator into one token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from purerl.prm import register

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


@register("token_classification")
class TokenClassificationPRM:
    """A ``*ForTokenClassification`` model with 2 labels (1 = correct step)."""

    score_range = (-1.0, 1.0)

    def __init__(
        self, model, tokenizer, separator: str = "\n", batch_tokens: int = 16384, max_length: int | None = None
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.separator = separator
        self.batch_tokens = batch_tokens
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)
        self.truncated = 0  # responses whose input was cut at max_length, over this PRM's lifetime

    @torch.no_grad()
    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        items = []
        for prompt, row in zip(prompts, steps):
            ids, markers, _ = build_prm_inputs(self.tokenizer, prompt, row, self.separator)
            if self.max_length and len(ids) > self.max_length:
                self.truncated += 1
                log.warning("PRM input of %d tokens cut to %d; steps past it get no score", len(ids), self.max_length)
                ids = ids[: self.max_length]
                markers = [m for m in markers if m < self.max_length]
            items.append((ids, markers))
        scores: list[list[float]] = [[] for _ in items]
        # Bucket by length so that one long response does not pad a whole batch.
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        device = next(self.model.parameters()).device
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(items[order[end]][0]) * (end - start + 1) <= self.batch_tokens:
                end += 1
            chunk = order[start:end]
            width = max(len(items[i][0]) for i in chunk)
            ids = torch.full((len(chunk), max(width, 1)), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                seq = items[i][0]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            probs = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().softmax(-1)
            diff = (probs[..., 1] - probs[..., 0]).cpu()
            for row, i in enumerate(chunk):
                scores[i] = diff[row, items[i][1]].tolist()
            start = end
        return scores
