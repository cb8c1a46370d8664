"""Per-row seeded sampling: every row of a batch draws from a random stream of its own.

With one global random generator a sample depends on which other prompts share its batch, so work
batched differently (a resumed run, another batch size) samples differently. Here row i's next token is
``argmax(logits / temperature + g)`` with Gumbel noise ``g`` drawn from a generator seeded ``seeds[i]``:
by the Gumbel-max trick an exact sample of ``softmax(logits / temperature)``, decoded greedily by
transformers ``generate`` (:func:`purerl.rollout.hf.generate`). A row's sample thus depends on its seed
and prompt only (left padding may still move its logits in the last float digits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from purerl.rollout import Rollout
from purerl.rollout.hf import generate


def stream_seed(*key) -> int:
    """A 63-bit seed for a key of ints and strings, the same in every process (unlike ``hash``).

    >>> stream_seed(0, 3, 1) == stream_seed(0, 3, 1) != stream_seed(0, 3, 2)
    True
    """
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class GumbelNoise:
    """A logits processor that adds ``scores / temperature`` to Gumbel noise, row i's from ``seeds[i]``."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        self.seeds, self.temperature, self.generators = list(seeds), temperature, None

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:  # one stream per row, on the logits' device, for the whole generation
            self.generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        return scores.float() / self.temperature - torch.log(-torch.log(u))


class _NoisyModel:
    """``model`` whose ``generate`` applies ``noise``; every other attribute is the model's."""

    def __init__(self, model, noise: GumbelNoise):
        self._model, self._noise = model, noise

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, **kwargs):
        from transformers import LogitsProcessorList

        return self._model.generate(**kwargs, logits_processor=LogitsProcessorList([self._noise]))


class SeededGenerate:
    """The ``hf`` rollout backend for one batch whose row i samples from stream ``seeds[i]`` (greedy
    decoding stays greedy). Build one per call: ``sample_answers(SeededGenerate(model, tok, seeds), ...)``."""

    def __init__(self, model, tokenizer, seeds: Sequence[int], context: int | None = None):
        self.model, self.tokenizer, self.seeds, self.context = model, tokenizer, list(seeds), context

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False) -> Rollout:  # fmt: skip
        if len(prompts) != len(self.seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(self.seeds)} seeds")
        model = self.model if greedy else _NoisyModel(self.model, GumbelNoise(self.seeds, temperature))
        return generate(model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, greedy=True,
                        context=self.context)  # fmt: skip
