"""Generation backends: a :class:`RolloutBackend` turns prompts into a :class:`Rollout`.

Backends are registered by name in :data:`purerl.registry.ROLLOUT_BACKENDS` (``hf``: transformers
``generate``); a config picks one with ``rollout.backend``. :func:`sample_answers` is the one
prompt -> generate -> decode -> grade path that training, evaluation and data generation share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class Rollout:
    """Sampled responses, laid out for log-prob computation.

    Attributes:
        input_ids: (B, P + T) left-padded prompt followed by the response (padding after EOS).
        attention_mask: (B, P + T) 1 on real prompt and response tokens.
        response_mask: (B, T) 1 on response tokens up to and including EOS.
        prompt_len: P, the padded prompt width.
        truncated: (B,) bool, True where no EOS came before the length cap.
        prompt_cut: (B,) bool, True where the prompt was longer than the policy's context leaves room
            for and its beginning was cut off (:func:`purerl.rollout.hf.encode_prompts`); all False
            when not given.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    truncated: torch.Tensor
    prompt_cut: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.prompt_cut is None:
            self.prompt_cut = torch.zeros(self.input_ids.shape[0], dtype=torch.bool, device=self.input_ids.device)

    @property
    def cut_prompts(self) -> int:
        """How many rows' prompts were cut to fit the context (a prompt repeated K times counts K times)."""
        return int(self.prompt_cut.sum())

    @property
    def response_ids(self) -> torch.Tensor:
        """(B, T)."""
        return self.input_ids[:, self.prompt_len :]

    def select(self, index: torch.Tensor) -> Rollout:
        """The rows ``index`` of this rollout."""
        return Rollout(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.prompt_len,
            self.truncated[index],
            self.prompt_cut[index],
        )

    def response_id_lists(self) -> list[list[int]]:
        """Each response's ids without padding (EOS kept)."""
        lengths = self.response_mask.sum(-1).tolist()
        return [row[: int(n)].tolist() for row, n in zip(self.response_ids, lengths)]


class RolloutBackend(Protocol):
    """Samples responses from a policy. Built as ``cls(model, tokenizer)``; it must sample from the
    weights the trainer updates (or sync them before each call)."""

    tokenizer: Any
    """The policy's tokenizer (responses are decoded with it)."""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False) -> Rollout:  # fmt: skip
        """One response per prompt (repeat a prompt for K samples), laid out as a :class:`Rollout`.
        A prompt longer than the policy's context allows is cut from the left and marked in
        ``Rollout.prompt_cut`` (the ``hf`` backend's rule: :func:`purerl.rollout.hf.prompt_budget`).
        A backend that takes ``min_new_tokens`` (no EOS before that many tokens) gets it from
        ``rollout.min_new_tokens`` when that is set."""
        ...


@dataclass
class Answers:
    """Decoded (and graded) responses of one :func:`sample_answers` call."""

    texts: list[str]
    correct: list[bool | None] | None
    rollout: Rollout


def sample_answers(
    backend: RolloutBackend,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    grade: Callable[[int, str], bool | None] | None = None,
) -> Answers:
    """Generate one response per prompt, decode it (special tokens dropped), and grade it. Prompts too
    long for the policy's context are cut by the backend; ``answers.rollout.cut_prompts`` counts them.

    Args:
        backend: a :class:`RolloutBackend`.
        prompts: the policy's prompts, templates applied.
        grade: ``grade(i, text)`` for the ``i``-th response (None: no grading).
    """
    rollout = backend.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, greedy=greedy)
    texts = backend.tokenizer.batch_decode(rollout.response_id_lists(), skip_special_tokens=True)
    correct = None if grade is None else [grade(i, text) for i, text in enumerate(texts)]
    return Answers(texts, correct, rollout)
