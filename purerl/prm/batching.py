"""Shared by the model-backed PRM adapters: loading, truncation with a count, marker scans and
length-bucketed forward passes.

torch and transformers are imported where a model is loaded or run, not when an adapter class is looked
up, so that config validation (which asks an adapter class about its settings) stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

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


def marker_positions(ids: Sequence[int], marker_id: int, expected: int, what: str) -> list[int]:
    """Positions of ``marker_id`` in ``ids``; there must be one per step (``expected``).

    >>> marker_positions([5, 9, 7, 9], 9, 2, "step tags")
    [1, 3]
    """
    markers = [i for i, t in enumerate(ids) if t == marker_id]
    if len(markers) != expected:
        raise ValueError(f"found {len(markers)} {what} for {expected} steps")
    return markers


def bucketed_scores(
    model,
    items: Sequence[tuple[list[int], list[int | None]]],
    pad_id: int,
    batch_tokens: int,
    read: Callable[[Any], Any],
) -> list[list[float]]:
    """Run ``model`` over ``items`` (ids, marker positions) in batches of similar length.

    ``read(logits)`` maps (b, t, ...) logits to (b, t) scores; each item's scores are read at its
    markers (NaN for a marker that is None). Sorting by length means one long response never pads a
    whole batch; a batch holds at most ``batch_tokens`` padded tokens (at least one item).
    """
    import torch

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
        for row, i in zip(values.tolist(), chunk):
            scores[i] = [float("nan") if m is None else row[m] for m in items[i][1]]
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


class ModelPRM:
    """Base of the adapters around a transformers model: the model, its tokenizer, a padded-token budget
    per forward pass, truncation at the model's length limit, and loading from a folder or hub id.

    A subclass sets ``kind`` (its registry name), ``options`` (the config keys its constructor takes,
    e.g. ``separator`` or ``score_map``) and :meth:`model_class`, and implements ``score``.
    """

    kind = ""
    options: tuple[str, ...] = ()
    score_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(self, model, tokenizer, batch_tokens: int = 16384, max_length: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.truncation = Truncation(max_length or getattr(model.config, "max_position_embeddings", None))

    @property
    def truncated(self) -> int:
        """Inputs cut at the length limit over this PRM's lifetime."""
        return self.truncation.count

    @classmethod
    def model_class(cls, trust_remote_code: bool):
        """The transformers auto class whose head this format reads."""
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    @classmethod
    def load(cls, path: str, *, dtype: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
             **options) -> ModelPRM:  # fmt: skip
        """The adapter around the model in ``path`` (a folder or hub id), with the head its format uses.
        ``options`` may hold any config keys; those in ``cls.options`` reach the constructor."""
        from purerl.models.loading import load_prm_model

        model, tokenizer = load_prm_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                          auto_class=cls.model_class(trust_remote_code))  # fmt: skip
        return cls(model, tokenizer, **{k: v for k, v in options.items() if k in cls.options})

    @classmethod
    def check_config(cls, spec, task) -> None:
        if not spec.path:
            raise ValueError(
                f"prm.kind={cls.kind} needs prm.path (a folder or hub id of such a model); without a path "
                "purerl uses its built-in PRM, a token_classification model"
            )

    @classmethod
    def from_spec(cls, spec, path: str | None, task=None) -> ModelPRM:
        return cls.load(path or spec.path, dtype=spec.dtype, device=spec.device,
                        trust_remote_code=spec.trust_remote_code, separator=spec.separator,
                        score_map=spec.score_map)  # fmt: skip

    def step_log_odds(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]):
        """``(log_odds, step_mask)``, both (B, S): each step's log-odds of being correct under the model as it
        is now, with gradients (the PRM refresh trains on them); a step past the length limit is masked.
        One padded forward pass over the B responses (the refresh's minibatches are small)."""
        import torch

        items = self.inputs(prompts, steps)
        width = max(1, max(len(ids) for ids, _ in items))
        device = next(self.model.parameters()).device
        pad = getattr(self, "pad_id", None)
        pad = self.tokenizer.pad_token_id if pad is None else pad
        ids = torch.full((len(items), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (seq, _) in enumerate(items):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device))
        per_token = self.log_odds((out.logits if hasattr(out, "logits") else out[0]).float())
        n = max([1] + [len(markers) for _, markers in items])
        positions = torch.zeros(len(items), n, dtype=torch.long)
        step_mask = torch.zeros(len(items), n, dtype=torch.bool)
        for row, (_, markers) in enumerate(items):
            for j, m in enumerate(markers):
                if m is not None:
                    positions[row, j], step_mask[row, j] = m, True
        return per_token.gather(1, positions.to(per_token.device)), step_mask.to(per_token.device)


class ProbabilityScores(ModelPRM):
    """Adapters whose native scores are probabilities in [0, 1] (``score_map`` may map them to [-1, 1])."""

    score_map: str = "none"

    @property
    def score_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.score_map == "affine" else (0.0, 1.0)
