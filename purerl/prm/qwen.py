"""The ``qwen_prm`` format (Qwen2.5-Math-PRM-7B / 72B).

Input: the model's chat template with a system message, the query as the user turn, and the response
as the assistant turn with every step followed by ``"<extra_0>"``. The model gives two logits per
token; a step's score is ``softmax(logits)[1]`` (p(positive)) at its ``<extra_0>``, in [0, 1].
``score_map="affine"`` maps it to ``2p - 1`` in [-1, 1], so that min-form sees a failing step
(p < 0.5) as negative; with ``"none"`` every step is positive and min-form only ranks responses by
their weakest step (see docs/prm-formats.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from purerl.prm import register
from purerl.prm.batching import ProbabilityScores, Truncation, bucketed_scores, map_scores
from purerl.prompts import COT_SYSTEM

STEP_TOKEN = "<extra_0>"


@register("qwen_prm")
class QwenPRM(ProbabilityScores):
    """A Qwen2.5-Math-PRM style model (two logits per token) read at each ``<extra_0>``."""

    def __init__(self, model, tokenizer, system: str = COT_SYSTEM, score_map: str = "none",
                 batch_tokens: int = 16384, max_length: int | None = None):  # fmt: skip
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.system = system
        self.score_map = score_map
        self.batch_tokens = batch_tokens
        self.step_id = tokenizer.convert_tokens_to_ids(STEP_TOKEN)
        if self.step_id is None or self.step_id == tokenizer.unk_token_id:
            raise ValueError(f"the qwen_prm tokenizer has no {STEP_TOKEN!r} token")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the qwen_prm tokenizer has no chat template")
        self.truncation = Truncation(max_length or getattr(model.config, "max_position_embeddings", None))

    def build_inputs(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of one response in the chat template, and the position of each step's ``<extra_0>``."""
        response = "".join(s.replace(STEP_TOKEN, "") + STEP_TOKEN for s in steps)
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        markers = [i for i, t in enumerate(ids) if t == self.step_id]
        if len(markers) != len(steps):
            raise ValueError(f"found {len(markers)} {STEP_TOKEN} tokens for {len(steps)} steps")
        return ids, markers

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        items = [self.truncation(*self.build_inputs(p, row)) for p, row in zip(prompts, steps)]
        scores = bucketed_scores(self.model, items, self.tokenizer.pad_token_id, self.batch_tokens, _p_positive)
        return map_scores(scores, self.score_map, (0.0, 1.0))


def _p_positive(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1)[..., 1]
