"""Model construction and loading: tiny transformers models for the built-in task, and the cache.

Everything saves with ``save_pretrained`` and loads with ``from_pretrained``, the same code path a
user's hub model or local folder takes. transformers is imported inside the functions that use it, so
that a config check answers without loading it (:mod:`purerl.models.names`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from purerl.config import TinyModelConfig
from purerl.models.names import resolve_model
from purerl.tasks import arithmetic

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification, PreTrainedTokenizerBase


def cache_root() -> Path:
    """Where built-in models are cached: ``$PURERL_CACHE`` or ``~/.cache/purerl``."""
    return Path(os.environ.get("PURERL_CACHE", Path.home() / ".cache" / "purerl"))


ASSETS = Path(__file__).resolve().parents[1] / "assets"
"""Built-in models shipped with the package (made by ``purerl prepare``; see docs/builtin-models.md)."""


def cached_folder(name: str, refresh: bool = False) -> tuple[Path, bool]:
    """``(folder, ready)`` for a built-in model: a shipped copy if one matches, else the cache entry."""
    shipped = ASSETS / name
    if not refresh and (shipped / "config.json").exists():
        return shipped, True
    folder = cache_root() / name
    return folder, (folder / "config.json").exists() and not refresh


def publish(model, tokenizer, folder: Path, meta_name: str, meta: dict, replace: bool = False) -> Path:
    """Save a built model into ``folder`` atomically: write beside it, then rename into place.

    Each process writes its own temporary folder, so parallel builders of the same model never
    collide; if another one finished first, its copy is kept (unless ``replace``).
    """
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / meta_name).write_text(json.dumps(meta, indent=2))
    if replace and folder.exists():
        shutil.rmtree(folder)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def cache_key(*parts: object) -> str:
    """A short stable hash of dataclasses / JSON-able values: the name of a cache entry."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def task_tokenizer(task: arithmetic.ArithmeticConfig, vocab_size: int = 320) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on the built-in task's text."""
    from purerl.models.tokenization import train_bpe_tokenizer

    rng = random.Random(0)
    corpus = []
    for _ in range(3000):
        p = arithmetic.random_problem(rng, task)
        steps, _ = arithmetic.sample_solution(p, rng, task)
        corpus.append(p.prompt + arithmetic.SEPARATOR.join(steps))
    corpus += list(arithmetic.FILLERS)
    return train_bpe_tokenizer(corpus, vocab_size=vocab_size)


def _llama_config(tokenizer: PreTrainedTokenizerBase, size: TinyModelConfig, **extra) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        max_position_embeddings=size.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def new_policy(tokenizer: PreTrainedTokenizerBase, size: TinyModelConfig, seed: int) -> LlamaForCausalLM:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_llama_config(tokenizer, size))


def new_prm(tokenizer: PreTrainedTokenizerBase, size: TinyModelConfig, seed: int) -> LlamaForTokenClassification:
    import torch
    from transformers import LlamaForTokenClassification

    torch.manual_seed(seed)
    return LlamaForTokenClassification(_llama_config(tokenizer, size, num_labels=2))


def quiet_transformers() -> None:
    """Keep transformers' warnings and progress bars out of the output; called by the commands that load
    models only, so that the others (and a bad config) answer without importing it."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def torch_dtype_of(name: str | None):
    import torch

    if name in (None, "auto"):
        return torch.float32
    if not isinstance(getattr(torch, str(name), None), torch.dtype):
        raise ValueError(f"unknown dtype {name!r} (use float32, bfloat16 or float16)")
    return getattr(torch, name)


def load_policy(path: str | Path, *, gguf_file: str | None = None, dtype: str | None = None, device: str = "cpu",
                trust_remote_code: bool = False):  # fmt: skip
    """``(model, tokenizer)`` of a causal LM from a local folder, hub id, ``.gguf`` file or known name.

    Folder and hub weights load from safetensors only. A GGUF file is dequantised to ``dtype`` (default
    float32) by transformers; the converted model is cached (``cache_root()/gguf-<key>``) so that the
    slow conversion runs once. ``trust_remote_code`` stays off unless asked for.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_model(path, gguf_file)
    torch_dtype = torch_dtype_of(dtype)
    if gguf is not None:
        source = Path(folder) / gguf
        stat = source.stat() if source.exists() else None
        key = cache_key(str(source.resolve()) if stat else str(source), stat.st_size if stat else 0, str(torch_dtype))
        cached = cache_root() / f"gguf-{key}"
        if not (cached / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch_dtype)
            # the weights are dequantised already; drop the GGUF marks so that the model saves as usual
            model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
            publish(model, tokenizer, cached, "purerl_gguf.json", {"source": str(source), "dtype": str(torch_dtype)})
        folder = str(cached)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_prm_model(path: str | Path, *, dtype: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
                   auto_class=None, **kwargs):  # fmt: skip
    """``(model, tokenizer)`` of a PRM from a local folder or hub id (safetensors); ``auto_class`` picks
    the head (None: ``AutoModelForTokenClassification``; a causal LM for Math-Shepherd)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    auto_class = auto_class or AutoModelForTokenClassification
    model = auto_class.from_pretrained(
        path, dtype=torch_dtype_of(dtype), use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
    ).to(device)
    return model, AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
