"""The ``math_shepherd`` format (Math-Shepherd PRM, peiyi9979/math-shepherd-mistral-7b-prm).

A causal LM reads ``question + " " + steps``, each step followed by the step tag ``" ки"`` (and a
newline between steps). At each tag the model's next-token logits for ``"+"`` (good) and ``"-"`` (bad)
are compared: score = ``softmax([logit(+), logit(-)])[0]``, in [0, 1]. ``score_map="affine"`` maps
it to [-1, 1] (see docs/real-models.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from purerl.prm.batching import ProbabilityScores, bucketed_scores, map_scores, marker_positions

STEP_TAG = "ки"


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the math_shepherd tokenizer encodes {text!r} as nothing")
    return ids[-1]  # " +" -> [..., "+"]: the last piece is the token itself


class MathShepherdPRM(ProbabilityScores):
    """A causal LM read at each step tag: p("+") against p("-")."""

    kind = "math_shepherd"
    options = ("score_map",)

    def __init__(self, model, tokenizer, step_tag: str = STEP_TAG, good: str = "+", bad: str = "-",
                 score_map: str = "none", batch_tokens: int = 16384, max_length: int | None = None):  # fmt: skip
        super().__init__(model, tokenizer, batch_tokens, max_length)
        self.step_tag = step_tag
        self.tag_id = _single_token(tokenizer, step_tag)
        self.good_id, self.bad_id = _single_token(tokenizer, f" {good}"), _single_token(tokenizer, f" {bad}")
        self.score_map = score_map
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def model_class(cls, trust_remote_code: bool):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def build_inputs(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Ids of ``prompt + " " + step_1 + " ки\\n" + step_2 + " ки"`` (tokenised whole, as the
        reference code does) and the position of each tag."""
        body = "\n".join(f"{s.replace(self.step_tag, '').strip()} {self.step_tag}" for s in steps)
        ids = self.tokenizer(f"{prompt.rstrip()} {body}", add_special_tokens=True)["input_ids"]
        return ids, marker_positions(ids, self.tag_id, len(steps), f"step tags {self.step_tag!r}")

    def inputs(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[tuple[list[int], list]]:
        """``(ids, tag positions)`` of each response, cut at the length limit."""
        return [self.truncation(*self.build_inputs(p, row)) for p, row in zip(prompts, steps)]

    def log_odds(self, logits):
        """(b, t) log-odds of a good step at each tag: logit("+") - logit("-") of the next token."""
        return logits[..., self.good_id] - logits[..., self.bad_id]

    def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        items = self.inputs(prompts, steps)
        good, bad = self.good_id, self.bad_id

        def read(logits):
            return logits[..., [good, bad]].softmax(-1)[..., 0]

        scores = bucketed_scores(self.model, items, self.pad_id, self.batch_tokens, read)
        return map_scores(scores, self.score_map, (0.0, 1.0))
