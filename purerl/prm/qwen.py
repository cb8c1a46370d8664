"""The ``qwen_prm`` format (Qwen2.5-Math-PRM-7B / 72B).

Input: the model's chat template with a system message, the query as the user turn, and the response
as the assistant turn with every step followed by ``"<extra_0>"``. The model gives two logits per
token; a step's score is ``softmax(logits)[1]`` (p(positive)) at its ``<extra_0>``, in [0, 1].
``score_map="affine"`` maps it to ``2p - 1`` in [-1, 1], so that min-form sees a failing step
(p < 0.5) as negative; with ``"none"`` every step is positive and min-form only ranks responses by
their weakest step (see docs/real-models.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from purerl.prm.batching import ProbabilityScores, bucketed_scores, map_scores, marker_positions
from purerl.tasks.prompts import COT_SYSTEM

STEP_TOKEN = "<extra_0>"


class QwenPRM(ProbabilityScores):
    """A Qwen2.5-Math-PRM style model (two logits per token) read at each ``<extra_0>``."""

    kind = "qwen_prm"
    options = ("score_map",)

    def __init__(self, model, tokenizer, system: str = COT_SYSTEM, score_map: str = "none",
                 batch_tokens: int = 16384, max_length: int | None = None):  # fmt: skip
        super().__init__(model, tokenizer, batch_tokens, max_length)
        self.system = system
        self.score_map = score_map
        self.step_id = tokenizer.convert_tokens_to_ids(STEP_TOKEN)
        if self.step_id is None or self.step_id == tokenizer.unk_token_id:
            raise ValueError(f"the qwen_prm tokenizer has no {STEP_TOKEN!r} token")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the qwen_prm tokenizer has no chat template")

    @classmethod
    def model_class(cls, trust_remote_code: bool):
        # Qwen2.5-Math-PRM ships its model class as remote code (AutoModel); two-logit heads load without it
        from transformers import AutoModel, AutoModelForTokenClassification

        return AutoModel if trust_remote_code else AutoModelForTokenClassification

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
        return ids, marker_positions(ids, self.step_id, len(steps), f"{STEP_TOKEN} tokens")

    def inputs(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[tuple[list[int], list]]:
        """``(ids, marker positions)`` of each response, cut at the length limit."""
        return [self.truncation(*self.build_inputs(p, row)) for p, row in zip(prompts, steps)]

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        items = self.inputs(prompts, steps)
        scores = bucketed_scores(self.model, items, self.tokenizer.pad_token_id, self.batch_tokens, _p_positive)
        return map_scores(scores, self.score_map, (0.0, 1.0))

    @staticmethod
    def log_odds(logits):
        """(b, t) log-odds of a positive step at each position: logit(positive) - logit(negative)."""
        return logits[..., 1] - logits[..., 0]


def _p_positive(logits):
    return logits.softmax(-1)[..., 1]
