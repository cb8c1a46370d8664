"""Shared fixtures: tiny tokenizers trained locally and loaded through `from_pretrained`."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from purerl.models.tokenization import train_bpe_tokenizer

SHARED_DATA = Path(os.environ.get("PURERL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
"""The shared benchmark files (``../shared/data`` beside the checkout, or ``$PURERL_SHARED_DATA``)."""


def arithmetic_solution(rng: random.Random) -> str:
    """A step-by-step solution in the style the built-in task writes: steps split by a blank line."""
    total = rng.randint(1, 99)
    steps = []
    for _ in range(rng.randint(1, 5)):
        b = rng.randint(1, 99)
        steps.append(f"Add {b} to {total}: {total}+{b}={total + b}.")
        total += b
    steps.append(f"The answer is \\boxed{{{total}}}.")
    return "\n\n".join(steps)


def _saved_and_loaded(tmp_path_factory, name: str, **kwargs):
    rng = random.Random(0)
    corpus = [arithmetic_solution(rng) for _ in range(1500)]
    folder = tmp_path_factory.mktemp(name)
    train_bpe_tokenizer(corpus, vocab_size=400, **kwargs).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # the same path a downloaded tokenizer takes


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory):
    """GPT-2 style byte-level BPE: whitespace and text are separate tokens ("." then "\\n\\n")."""
    return _saved_and_loaded(tmp_path_factory, "bpe")


@pytest.fixture(scope="session")
def merged_bpe_tokenizer(tmp_path_factory):
    """Byte-level BPE whose merges cross whitespace: tokens like ".\\n\\nAdd" span two steps."""
    return _saved_and_loaded(tmp_path_factory, "bpe_merged", merge_across_whitespace=True)


@pytest.fixture(scope="session")
def prm_folder(tmp_path_factory, bpe_tokenizer):
    """A tiny random token-classification PRM saved like a downloaded one, with the GPT-2 style tokenizer."""
    from purerl.models.loading import TinyModelConfig, new_prm

    folder = tmp_path_factory.mktemp("prm")
    size = TinyModelConfig(hidden_size=32, num_layers=1, intermediate_size=64)
    new_prm(bpe_tokenizer, size, seed=0).save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    return folder


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """Imports a helper script of the tests (a worker run in processes of its own) as a module."""
    return _load_script


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail (as an internal error, exit 1) if a command loads a model or tokenizer before rejecting its input."""
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the input was rejected")

    for name in ("AutoTokenizer", "AutoModelForCausalLM", "AutoModelForTokenClassification"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", boom)


@pytest.fixture
def free_port() -> int:
    """A TCP port on the loopback that nothing listens on (a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A model cache with configs/tiny.yaml's models built once (by `purerl prepare`), so every run
    loads them the same way. (A run that trains its models in-process first can differ from one that
    loads them in the last float digits, though not in its random choices.)"""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("purerl_cache")
    env = {**os.environ, "PURERL_CACHE": str(folder), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "purerl", "prepare", str(TINY_CONFIG)], capture_output=True,
                         text=True, timeout=600, env=env, cwd=TINY_CONFIG.parents[1])  # fmt: skip
    assert out.returncode == 0, out.stderr
    return folder


BAD_PRM_AND_CREDIT = [
    (["prm.kind=nope"], "prm.kind='nope': choose one of"),
    (["prm.score_map=cubic"], "prm.score_map='cubic': choose one of"),
    (["prm.kind=qwen_prm"], "prm.kind=qwen_prm needs prm.path"),
    (["prm.kind=rule", "prm.path=/some/folder"], "prm.kind=rule checks steps by program and takes no prm.path"),
    (["prm.dtype=float8"], "prm.dtype='float8': choose one of"),
    (["algo.mode=median"], "algo.mode='median': choose one of"),
    (["algo.mode=soft_min", "algo.temperature=0"], "algo.temperature must be > 0"),
    (["algo.vr_fraction=1.5"], r"algo.vr_fraction must lie in \[0, 1\]"),
    (["algo.kl_estimator=k9"], "algo.kl_estimator='k9': choose one of"),
    (["algo.reward=both"], "algo.reward='both': choose one of"),
    (["algo.kl_coef=-1"], "algo.kl_coef must be >= 0"),
    (["algo.vr_coef=abc"], "algo.vr_coef"),
]
"""Bad PRM and credit settings, each with the start of the one-line error every route must give for it
(``purerl train``, ``python -m purerl.integrations.trl`` and the verl plugin read the same purerl
config, so each must answer with the same line, naming the key)."""


@pytest.fixture(params=BAD_PRM_AND_CREDIT, ids=lambda case: " ".join(case[0]))
def bad_prm_or_credit(request):
    """One of :data:`BAD_PRM_AND_CREDIT`: ``(overrides, message regex)``."""
    return request.param


@pytest.fixture
def cpu_hog():
    """A busy process per CPU for the length of a test: a machine as loaded as a busy CI runner."""
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    yield len(hogs)
    for hog in hogs:
        hog.kill()
        hog.wait()


TINY_RUN_SETTINGS = ["run.threads=1", "run.checkpoint_every=1", "run.keep_checkpoints=2", "run.tensorboard=false"]
"""The settings of :func:`tiny_run` (with configs/tiny.yaml), which a run resuming it must repeat."""


@pytest.fixture(scope="session")
def tiny_run(tiny_cache, tmp_path_factory) -> Path:
    """A finished 4-step run of configs/tiny.yaml (:data:`TINY_RUN_SETTINGS`) with the checkpoints of
    steps 3 and 4; copy it before changing anything."""
    from purerl.config import load_config
    from purerl.training.trainer import Trainer

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PURERL_CACHE", str(tiny_cache))
        Trainer(load_config(str(TINY_CONFIG), [*TINY_RUN_SETTINGS, f"run.out_dir={out}"])).train()
    return out


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hugging Face hub on the loopback that knows the model ids in the returned set (others: 404 with
    the hub's ``RepoNotFound``), set as this process's hub endpoint."""
    import http.server
    import json
    import threading

    from huggingface_hub import constants

    known: set[str] = set()

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /api/models/<org>/<name>[/revision/...]
            repo = self.path.split("?")[0].removeprefix("/api/models/").split("/revision/")[0]
            found = repo in known
            body = json.dumps({"id": repo, "sha": "0" * 40} if found else {"error": "Repository not found"})
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            if not found:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield known
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- tiny PRMs of the other public formats

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FORMAT_PROMPTS = ["What is 2+3?", "Add 40 and 2."]
"""Prompts the format fixtures' tokenizers are trained on (besides arithmetic solutions)."""


def _format_corpus():
    rng = random.Random(1)
    return [arithmetic_solution(rng) for _ in range(800)] + FORMAT_PROMPTS


@pytest.fixture(scope="session")
def qwen_prm_folder(tmp_path_factory):
    """A tiny Qwen2 token-classification PRM in the Qwen2.5-Math-PRM format (a chat template, ``<extra_0>``)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    tok = train_bpe_tokenizer(
        _format_corpus(), vocab_size=400, extra_special_tokens=["<|im_start|>", "<|im_end|>", "<extra_0>"]
    )
    tok.chat_template = QWEN_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id,
                         max_position_embeddings=256)  # fmt: skip
    folder = tmp_path_factory.mktemp("qwen_prm")
    Qwen2ForTokenClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def shepherd_folder(tmp_path_factory):
    """A tiny Llama causal LM in the Math-Shepherd format (the step tag ``ки`` in its vocabulary)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_bpe_tokenizer(_format_corpus(), vocab_size=400, extra_special_tokens=["ки"])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    folder = tmp_path_factory.mktemp("shepherd")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
