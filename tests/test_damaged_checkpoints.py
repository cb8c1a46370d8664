"""Damaged checkpoints: each either resumes exactly or ends in one line naming the file (docs/reliability.md).

A damaged file is caught by the manifest (size and SHA-256); one whose ``manifest.json`` was rewritten
to match is caught by what ``trainer_state.pt`` recorded of the other files and by the zip CRC-32 of
its own records; what a checkpoint forged through all of that loads is still checked (the state's keys
and types, safetensors headers, tensor names, finite values). The fuzz test damages every file of the
newest checkpoint with random byte flips and truncations, with and without a rewritten manifest, and
resumes through ``purerl train``'s own resume path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from purerl.commands.cli import main
from purerl.commands.failures import report_failure
from purerl.config import load_config
from purerl.training import checkpoint as ckpt
from purerl.training.trainer import Trainer
from tests.conftest import TINY_RUN_SETTINGS

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
SETTINGS = TINY_RUN_SETTINGS
NEWEST, OLDER = "step-000004", "step-000003"


@pytest.fixture
def finished(tiny_run) -> Path:
    """The tiny run (tests/conftest.py), with the checkpoints of steps 3 and 4; copied before damage."""
    assert sorted(p.name for p in (tiny_run / "checkpoints").glob("step-*")) == [OLDER, NEWEST]
    return tiny_run


def copy_run(finished: Path, to: Path) -> Path:
    """The run's checkpoints and config, hard-linked (a damaged file is written anew, never in place)."""
    shutil.copytree(finished / "checkpoints", to / "checkpoints", copy_function=os.link)
    shutil.copy(finished / "config.yaml", to / "config.yaml")
    return to


def replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def rewrite_manifest(folder: Path) -> None:
    """Make manifest.json match the files as they are now (what a damaged checkpoint must not get past)."""
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    for name in manifest["files"]:
        path = folder / name
        manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": ckpt._sha256(path)}
    replace(folder / ckpt.MANIFEST, json.dumps(manifest, indent=1).encode())


def forge(folder: Path, **changes) -> None:
    """Re-save trainer_state.pt with ``changes`` and the hashes of the files as they are now, and rewrite
    the manifest: a checkpoint every hash agrees with, so only the checks of what loads can refuse it."""
    state = torch.load(folder / ckpt.STATE_FILE, weights_only=True)
    state["files"] = {name: ckpt._sha256(folder / name) for name in state["files"]}
    state.update(changes)
    (folder / ckpt.STATE_FILE).unlink()
    torch.save(state, folder / ckpt.STATE_FILE)
    rewrite_manifest(folder)


# ------------------------------------------------------------------------- the CLI: one line, exit 2


@pytest.fixture
def resume(finished, tmp_path, tiny_cache, monkeypatch, capsys):
    """``resume(damage, models=False)``: damage a copy of the run (``damage(newest checkpoint folder)``),
    run ``purerl train --resume`` in process, and return its one stderr line (exit 2, no traceback).
    With ``models=False`` loading a model or tokenizer before the refusal fails the test."""
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))

    def run(damage, models: bool = False) -> str:
        out = copy_run(finished, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        damage(out / "checkpoints" / NEWEST)
        with monkeypatch.context() as patch:
            if not models:
                for name in ("AutoTokenizer", "AutoModelForCausalLM", "LlamaForCausalLM"):
                    patch.setattr(getattr(transformers, name), "from_pretrained", _no_model)
            code = main(["train", TINY, *SETTINGS, f"run.out_dir={out}", "--resume"])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err and len(lines) == 1, err
        assert lines[0].startswith("purerl train: error: ") and "internal error" not in lines[0], lines[0]
        return lines[0]

    return run


def _no_model(*args, **kwargs):
    raise AssertionError("a model or tokenizer was loaded before the damaged checkpoint was refused")


def _state_file(data: bytes):
    def damage(folder: Path) -> None:
        replace(folder / ckpt.STATE_FILE, data)
        rewrite_manifest(folder)

    return damage


def test_an_empty_trainer_state_is_named(resume):
    line = resume(_state_file(b""))
    assert f"{NEWEST}/trainer_state.pt: damaged (not a complete zip archive: BadZipFile" in line


def test_a_garbage_trainer_state_is_named(resume):
    line = resume(_state_file(bytes(random.Random(0).randrange(256) for _ in range(4096))))
    assert f"{NEWEST}/trainer_state.pt: damaged" in line


def test_a_trainer_state_with_wrong_types_is_named(resume):
    line = resume(lambda folder: forge(folder, step="4"))  # the TypeError comparing int and str, before
    assert f"{NEWEST}/trainer_state.pt: step holds str, expected int" in line
    line = resume(lambda folder: forge(folder, monitor=None, extra=1))
    assert "trainer_state.pt: not a trainer state of this command (unknown extra)" in line


def test_a_crafted_trainer_state_is_refused_without_torch_advice(resume):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    def plant(folder: Path) -> None:
        (folder / ckpt.STATE_FILE).unlink()
        torch.save({"step": 4, "payload": Evil()}, folder / ckpt.STATE_FILE)
        rewrite_manifest(folder)

    line = resume(plant)
    assert "trainer_state.pt: refusing to load objects other than tensors and plain data (it asks for " in line
    assert "weights_only" not in line and "Re-running" not in line


def _cut_weights(folder: Path) -> None:
    path = folder / "policy" / "model.safetensors"
    replace(path, path.read_bytes()[:-100])


def test_a_truncated_weights_file_is_named(resume):
    line = resume(lambda folder: (_cut_weights(folder), rewrite_manifest(folder)))  # the recorded hash disagrees
    assert f"{NEWEST}/policy/model.safetensors: not the file this checkpoint saved" in line
    line = resume(lambda folder: (_cut_weights(folder), forge(folder)), models=True)  # every hash agrees
    assert f"{NEWEST}/policy/model.safetensors: damaged weights file (SafetensorError: " in line


def test_nan_weights_are_named(resume):
    def poison(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        path = folder / "policy" / "model.safetensors"
        tensors = load_file(path)
        name = sorted(tensors)[0]
        tensors[name].view(-1)[0] = float("nan")
        path.unlink()
        save_file(tensors, path, metadata={"format": "pt"})
        forge(folder)

    line = resume(poison, models=True)
    assert f"{NEWEST}/policy/model.safetensors: 1 non-finite value(s) in " in line


def test_resume_from_a_checkpoint_saved_before_the_recorded_hashes(finished, tmp_path, tiny_cache, monkeypatch):
    """A checkpoint without ``files`` in its state (saved by an earlier purerl) still resumes."""
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    out = copy_run(finished, tmp_path / "run")
    folder = out / "checkpoints" / NEWEST
    state = torch.load(folder / ckpt.STATE_FILE, weights_only=True)
    del state["files"]
    (folder / ckpt.STATE_FILE).unlink()
    torch.save(state, folder / ckpt.STATE_FILE)
    rewrite_manifest(folder)
    trainer = Trainer(load_config(TINY, [*SETTINGS, f"run.out_dir={out}"]), resume=True)
    assert trainer.step == 4 and trainer.saved == folder


# ------------------------------------------------------------------------------------------- fuzz


def _digest(value, h) -> None:
    if isinstance(value, torch.Tensor):
        h.update(f"{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(repr(key).encode())
            _digest(value[key], h)
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for item in value:
            _digest(item, h)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


def snapshot(t: Trainer) -> str:
    """Everything a resume restores: weights, optimizer, scheduler, data position, RNGs, monitor, logs."""
    h = hashlib.sha256()
    _digest({"step": t.step, "weights": t.policy.state_dict(), "optimizer": t.optimizer.state_dict(),
             "scheduler": t.scheduler.state_dict(), "data": t.data_rng.getstate(), "history": t.history,
             "monitor": vars(t.monitor), "rollbacks": t.rollbacks, "torch": torch.get_rng_state(),
             "numpy": np.random.get_state()[1], "python": random.getstate()}, h)  # fmt: skip
    return h.hexdigest()


def attempt(t: Trainer, run: Path) -> tuple[str, str]:
    """Resume ``run`` into ``t`` as ``purerl train --resume`` does: ``("resumed", folder name + snapshot)``
    or ``("refused", the exit code and the stderr report_failure prints)``."""
    t.out = run
    try:
        found = t._find_resume(None, [])
        t._restore(found.folder, state=t.__dict__.pop("resume_state"))
        return "resumed", f"{found.folder.name} {snapshot(t)}"
    except Exception as err:  # what the command would report
        err_text = io.StringIO()
        with contextlib.redirect_stderr(err_text):
            code = report_failure("train", err)
        return "refused", f"{code} {err_text.getvalue()}"


def mutations(data: bytes, rng: random.Random, header: int) -> list[tuple[str, bytes]]:
    """4 single-bit flips (anywhere, in the first 512 bytes, in the last 512, anywhere) and 2 cuts."""
    out, size = [], len(data)
    for where in (range(size), range(min(size, 512)), range(max(0, size - 512), size), range(size)):
        at, bit = rng.choice(where), rng.randrange(8)
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        out.append((f"flip byte {at} bit {bit}", bytes(flipped)))
    for cut in (rng.randrange(size), size - 1):
        out.append((f"cut to {cut} bytes", data[:cut]))
    for _ in range(4 * bool(header)):  # flips in a safetensors header, for the forged variant
        at, bit = rng.randrange(header), rng.randrange(8)
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        out.append((f"header flip byte {at} bit {bit}", bytes(flipped)))
    return out


def _variants(name: str, label: str) -> tuple[str, ...]:
    if name == ckpt.MANIFEST:
        return ("kept",)
    forgeable = name == "policy/config.json" or label.startswith("header")
    return ("kept", "rewritten", "forged") if forgeable else ("kept", "rewritten")


def test_fuzzed_checkpoints_resume_exactly_or_end_in_one_line(finished, tmp_path, tiny_cache, monkeypatch, capsys):
    """Every file of checkpoints/step-4/: 6 flips and cuts each (+ 4 header flips of model.safetensors);
    manifest kept (the damage is caught, step 3 resumes), rewritten to match, or everything forged
    (policy/config.json and the safetensors header only: data flips there are new weights, which no check
    can tell from old ones). Counts and outcomes are printed (``pytest -s``)."""
    from purerl.models.loading import quiet_transformers

    quiet_transformers()
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))
    t = Trainer(load_config(TINY, [*SETTINGS, f"run.out_dir={tmp_path / 'fresh'}"]))
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    reference = {}
    for keep in (NEWEST, OLDER):
        run = copy_run(finished, tmp_path / f"reference-{keep}")
        shutil.rmtree(run / "checkpoints" / (OLDER if keep == NEWEST else NEWEST))
        outcome, value = attempt(t, run)
        assert outcome == "resumed", value
        reference[keep] = value
    source, outcomes, bad, example = finished / "checkpoints" / NEWEST, Counter(), [], {}
    for n, (name, label, data, variant) in enumerate(cases(source, random.Random(28))):
        run = copy_run(finished, tmp_path / f"case{n}")
        folder = run / "checkpoints" / NEWEST
        replace(folder / name, data)
        if variant == "rewritten":
            rewrite_manifest(folder)
        elif variant == "forged":
            forge(folder)
        outcome, value = attempt(t, run)
        result = judge(name, outcome, value, reference)
        outcomes[(name, variant, result)] += 1
        example.setdefault((name, variant, result), value.partition(str(run))[2][:150] if outcome == "refused" else "")
        if result.startswith(("BAD", "RESUMED OTHERWISE")):
            bad.append(f"{name} {label} ({variant}): {result}")
        shutil.rmtree(run)
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    with capsys.disabled():
        print(f"\n{sum(outcomes.values())} fuzzed checkpoint cases:")
        for (name, variant, result), count in sorted(outcomes.items()):
            print(f"  {count:3d}  {name:30s} {variant:9s}  {result}  {example[(name, variant, result)]}".rstrip())
    assert bad == [] and sum(outcomes.values()) >= 100


def cases(source: Path, rng: random.Random) -> list[tuple[str, str, bytes, str]]:
    """``(file, what was done, its new bytes, manifest variant)`` for every file of ``source``."""
    out = []
    for name in sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()):
        for label, data in mutations((source / name).read_bytes(), rng, _header(source / name)):
            out += [(name, label, data, variant) for variant in _variants(name, label)]
    return out


def judge(name: str, outcome: str, value: str, reference: dict[str, str]) -> str:
    """What came of one case: an exact resume (of which checkpoint), one clean line naming the damaged
    file, or what went wrong (``BAD...``, ``RESUMED OTHERWISE...``)."""
    if outcome == "resumed":
        exact = "resumed exactly" if value in reference.values() else "RESUMED OTHERWISE"
        return f"{exact} from {value.split()[0]}"
    code, _, err = value.partition(" ")
    lines = err.strip().splitlines()
    one = code == "2" and len(lines) == 1 and "internal error" not in err and "Traceback" not in err
    return f"one line naming {Path(name).name}" if one and Path(name).name in err else f"BAD: {err.strip()}"


def _header(path: Path) -> int:
    """The length of a safetensors file's header (0 for any other file)."""
    if path.suffix != ".safetensors":
        return 0
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")
