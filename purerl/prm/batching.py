"""Shared by the model-backed PRM adapters: truncation with a count, and length-bucketed forward passes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger(__name__)


class Truncation:
    """Cuts inputs longer than ``max_length`` (never silently: a warning and a running count)."""

    def __init__(self, max_length: int | None):
        self.max_length = max_length
        self.count = 0

    def __call__(self, ids: list[int], markers: list[int]) -> tuple[list[int], list[int | None]]:
        """``(ids, markers)`` cut to ``max_length``; markers past the cut become None (no score)."""
        if not self.max_length or len(ids) <= self.max_length:
            return ids, list(markers)
        self.count += 1
        lost = sum(m >= self.max_length for m in markers)
        log.warning(
            "PRM input of %d tokens cut to %d: %d of %d steps get no score (masked); %d inputs cut so far",
            len(ids), self.max_length, lost, len(markers), self.count,
        )  # fmt: skip
        return ids[: self.max_length], [m if m < self.max_length else None for m in markers]


def bucketed_scores(
    model,
    items: Sequence[tuple[list[int], list[int | None]]],
    pad_id: int,
    batch_tokens: int,
    read: Callable[[torch.Tensor], torch.Tensor],
) -> list[list[float]]:
    """Run ``model`` over ``items`` (ids, marker positions) in batches of similar length.

    ``read(logits)`` maps (b, t, ...) logits to (b, t) scores; each item's scores are read at its
    markers (NaN for a marker that is None). Sorting by length means one long response never pads a
    whole batch; a batch holds at most ``batch_tokens`` padded tokens (at least one item).
    """
    scores: list[list[float]] = [[] for _ in items]
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    device = next(model.parameters()).device
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(items[order[end]][0]) * (end - start + 1) <= batch_tokens:
            end += 1
        chunk = order[start:end]
        width = max(1, max(len(items[i][0]) for i in chunk))
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            seq = items[i][0]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        values = read(logits.float()).cpu()
        for row, i in enumerate(chunk):
            scores[i] = [float("nan") if m is None else values[row, m].item() for m in items[i][1]]
        start = end
    return scores


def map_scores(scores: list[list[float]], score_map: str, score_range: tuple[float, float]) -> list[list[float]]:
    """``score_map="affine"`` maps scores from ``score_range`` to [-1, 1]; ``"none"`` keeps them."""
    if score_map == "none":
        return scores
    if score_map != "affine":
        raise ValueError(f"unknown score_map {score_map!r}; use none or affine")
    lo, hi = score_range
    return [[2 * (s - lo) / (hi - lo) - 1 for s in row] for row in scores]


class ProbabilityScores:
    """Shared by adapters whose native scores are probabilities in [0, 1] (``score_map``, ``truncation``)."""

    score_map: str
    truncation: Truncation

    @property
    def score_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.score_map == "affine" else (0.0, 1.0)

    @property
    def truncated(self) -> int:
        """Inputs cut at the length limit over this PRM's lifetime."""
        return self.truncation.count
