"""The transformers ``generate`` backend: batched sampling with a KV cache.

Prompts longer than the policy's context are cut, by one rule (:func:`prompt_budget`): a prompt may
hold ``context - max_new_tokens`` tokens, where ``context`` is the model config's
``max_position_embeddings`` (else ``n_positions`` / ``n_ctx``, else the tokenizer's ``model_max_length``
when below 10^7; none known: no limit). A longer prompt keeps its last tokens (its end holds the
question and a chat template's assistant header) and is marked in ``Rollout.prompt_cut``; a
``max_new_tokens`` that alone fills the context is a ``ValueError``. To keep a huge prompt (1 MB) cheap
to tokenize, only its last ``budget * PRECUT_CHARS_PER_TOKEN`` characters are tokenized (such a prompt
counts as cut even if, rarely, those characters make fewer tokens than the budget).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from purerl.rollout import Rollout

PRECUT_CHARS_PER_TOKEN = 32
"""Characters kept per token of budget before tokenizing a long prompt (tokens are rarely longer)."""
SANE_MAX_LENGTH = 10**7
"""A tokenizer's ``model_max_length`` at or above this means "unknown" (transformers writes 1e30)."""


def model_context(model, tokenizer) -> int | None:
    """The positions the policy can attend to (see the module docstring), or None when unknown."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    length = getattr(tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and 0 < length < SANE_MAX_LENGTH else None


def prompt_budget(context: int | None, max_new_tokens: int) -> int | None:
    """Prompt tokens allowed: ``context - max_new_tokens`` (None: no limit).

    >>> prompt_budget(256, 80), prompt_budget(None, 80)
    (176, None)
    """
    if context is None:
        return None
    if max_new_tokens >= context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt: the policy's context is {context} "
            "positions (its config's max_position_embeddings or n_positions, else the tokenizer's model_max_length); "
            "use fewer new tokens, or a model with a longer context"
        )
    return context - max_new_tokens


def encode_prompts(tokenizer, prompts: Sequence[str], budget: int | None):
    """``(input_ids (B, P), attention_mask (B, P), prompt_cut (B,) bool)``: the prompts tokenized (no
    special tokens added), each cut to its last ``budget`` tokens, left-padded with the pad token."""
    texts, cut = list(prompts), [False] * len(prompts)
    if budget is not None:
        chars = budget * PRECUT_CHARS_PER_TOKEN
        cut = [len(t) > chars for t in texts]
        texts = [t[-chars:] for t in texts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if budget is not None:
        cut = [c or len(row) > budget for c, row in zip(cut, ids)]
        ids = [row[-budget:] for row in ids]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max((len(row) for row in ids), default=0)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask, torch.tensor(cut, dtype=torch.bool)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    context: int | None = None,
    min_new_tokens: int = 0,
) -> Rollout:
    """Sample one response per prompt (repeat prompts for K samples each); prompts too long for the
    context (``context``, else the model's: module docstring) are cut from the left and marked in
    ``Rollout.prompt_cut``. EOS is not sampled before ``min_new_tokens`` tokens."""
    budget = prompt_budget(context or model_context(model, tokenizer), max_new_tokens)
    tokenizer.padding_side = "left"
    prompt_ids, prompt_mask, prompt_cut = encode_prompts(tokenizer, prompts, budget)
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
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
        **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}),
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
    return Rollout(input_ids, attention_mask, response_mask, prompt_len, truncated, prompt_cut.to(device))


class HFGenerate:
    """The ``hf`` rollout backend: transformers ``generate`` on the policy itself (so it always samples
    from the current weights)."""

    def __init__(self, model, tokenizer, context: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.context = context

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False, min_new_tokens: int = 0) -> Rollout:  # fmt: skip
        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        greedy=greedy, context=self.context, min_new_tokens=min_new_tokens)  # fmt: skip


def _keeps_logits(model) -> bool:
    """Whether ``model.forward`` can compute logits for the last positions only (``logits_to_keep``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def sequence_logprobs(model, rollout: Rollout, with_entropy: bool = False):
    """Log-probs (B, T) of the response tokens under ``model`` (and the entropy (B, T) if asked).

    Logits are computed for the response positions only where the model allows it: with a large
    vocabulary the prompt's logits would be most of the memory.
    """
    from purerl.algo.losses import entropy_from_logits, logprobs_from_logits

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
