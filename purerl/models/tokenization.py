"""Train small byte-level BPE tokenizers locally (for built-in tasks and tests; no hub needed).

The result is a ``transformers.PreTrainedTokenizerFast`` that saves with ``save_pretrained`` and loads
back with ``AutoTokenizer.from_pretrained`` exactly like a downloaded tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    *,
    merge_across_whitespace: bool = False,
    extra_special_tokens: Iterable[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    Args:
        texts: training corpus.
        vocab_size: target vocabulary size (256 byte tokens + specials + merges).
        merge_across_whitespace: skip GPT-2's pre-tokenisation regex so that merges may join text and
            whitespace (tokens such as ``".\\n\\n"``), as many real tokenizers' vocabularies do.
        extra_special_tokens: more special tokens (e.g. a PRM's step tag).
    Returns:
        A fast tokenizer with ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and character offsets that are
        not trimmed (each token's span covers all of its characters).
    """
    specials = list(SPECIAL_TOKENS.values()) + list(extra_special_tokens)
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not merge_across_whitespace)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=list(extra_special_tokens) or None,
        **SPECIAL_TOKENS,
    )
