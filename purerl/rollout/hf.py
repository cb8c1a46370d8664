"""The transformers ``generate`` backend: batched sampling with a KV cache."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from purerl.rollout import Rollout


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
) -> Rollout:
    """Sample one response per prompt (repeat prompts for K samples each)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=temperature if not greedy else None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    prompt_len = prompt_ids.shape[1]
    response = out[:, prompt_len:]
    is_eos = response == tokenizer.eos_token_id
    # keep tokens up to and including the first EOS
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    truncated = ~is_eos.any(-1)
    response = torch.where(response_mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    input_ids = torch.cat([prompt_ids, response], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return Rollout(input_ids, attention_mask, response_mask, prompt_len, truncated)


class HFGenerate:
    """The ``hf`` rollout backend: transformers ``generate`` on the policy itself (so it always samples
    from the current weights)."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False) -> Rollout:  # fmt: skip
        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        greedy=greedy)  # fmt: skip


def _keeps_logits(model) -> bool:
    """Whether ``model.forward`` can compute logits for the last positions only (``logits_to_keep``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def sequence_logprobs(model, rollout: Rollout, with_entropy: bool = False):
    """Log-probs (B, T) of the response tokens under ``model`` (and the entropy (B, T) if asked).

    Logits are computed for the response positions only where the model allows it: with a large
    vocabulary the prompt's logits would be most of the memory.
    """
    from purerl.losses import entropy_from_logits, logprobs_from_logits

    position_ids = (rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask, "position_ids": position_ids}
    n = rollout.response_ids.shape[1]
    if _keeps_logits(model):
        logits = model(**kwargs, logits_to_keep=n + 1).logits[:, :-1].float()
    else:
        logits = model(**kwargs).logits[:, rollout.prompt_len - 1 : -1].float()
    logprobs = logprobs_from_logits(logits, rollout.response_ids)
    if with_entropy:
        with torch.no_grad():
            return logprobs, entropy_from_logits(logits)
    return logprobs
