"""Save and resume a run: model, optimizer, scheduler, RNG states, data position, metrics so far.

Layout: ``<run>/checkpoints/step-000040/`` holds ``policy/`` (``save_pretrained``), ``trainer_state.pt``
(plain data and tensors only), ``config.yaml`` (the settings it was trained with) and, written last,
``manifest.json`` (every file's size and SHA-256, the step, the hacking flags raised since the previous checkpoint).

A save is atomic: everything is written into ``checkpoints/.tmp-step-N``, each file and the folder
fsynced, the folder renamed into place and the parent fsynced, then ``checkpoints/LATEST`` replaced
atomically. A kill at any point leaves the previous checkpoints complete; leftovers (``.tmp-*``,
``.trash-*``) are removed by the next save. Resume takes the newest checkpoint whose manifest verifies
(files present, sizes and hashes equal) and says which newer ones it skipped and why.

``trainer_state.pt`` is read with ``torch.load(weights_only=True)``: a crafted file in a shared run
folder cannot run code; it is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purerl.io.files import fsync, write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MANIFEST = "manifest.json"
FOLDER = "checkpoints"
PREFIX = "step-"


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain data and tensors (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
             "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
    states = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # sampling on a GPU draws from these
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def step_folder(root: Path, step: int) -> Path:
    return Path(root) / FOLDER / f"{PREFIX}{step:06d}"


def save_checkpoint(folder: Path, model, tokenizer, state: dict[str, Any], config_text: str, flags: list[str]) -> Path:
    """Write a checkpoint into ``folder`` (``<run>/checkpoints/step-N``) atomically; returns ``folder``.

    ``state`` must hold plain data and tensors only (it is loaded with ``weights_only=True``).
    ``flags``: the hacking flags raised since the previous checkpoint (none: it passed every detector).
    """
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{folder.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / "policy")
    tokenizer.save_pretrained(tmp / "policy")
    torch.save(state, tmp / STATE_FILE)
    (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
    files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(tmp)}
    manifest = {"step": state["step"], "flags": sorted(flags), "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for path in [*_files(tmp), tmp / MANIFEST]:
        fsync(path)
    for sub in {p.parent for p in _files(tmp)} | {tmp}:
        fsync(sub)
    if folder.exists():  # the same step again (after a roll-back): move the old one aside first
        folder.rename(parent / f".trash-{folder.name}")
    tmp.rename(folder)
    fsync(parent)
    write_atomic(parent / "LATEST", folder.name + "\n")
    _clean_leftovers(parent)
    return folder


def _clean_leftovers(parent: Path) -> None:
    for stale in parent.glob(".trash-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in parent.glob(".tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


@dataclass
class Found:
    """A checkpoint folder and its manifest."""

    folder: Path
    step: int
    flags: list[str]
    """Hacking flags raised since the checkpoint before it."""

    def clean(self, acting: set[str] | frozenset[str] = frozenset()) -> bool:
        """No flag among ``acting`` (those whose guard stops or rolls back) was raised before it."""
        return not set(self.flags) & set(acting)


def verify(folder: Path, hashes: bool = True) -> Found:
    """The checkpoint in ``folder`` if its manifest matches its files (sizes, and with ``hashes`` their
    SHA-256: pruning, which reads no weights, checks sizes only); else ValueError saying what is wrong."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files, step, flags = manifest["files"], int(manifest["step"]), list(manifest["flags"])
    except FileNotFoundError:
        raise ValueError(f"{folder}: no {MANIFEST} (an unfinished save)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}/{MANIFEST}: unreadable ({err})") from None
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{folder}: {name} is missing")
        if path.stat().st_size != meta["bytes"] or (hashes and _sha256(path) != meta["sha256"]):
            raise ValueError(f"{folder}: {name} differs from its manifest (changed or damaged)")
    return Found(folder, step, flags)


def checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders of a run, newest first (complete or not)."""
    parent = Path(root) / FOLDER
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]), reverse=True)


def newest(root: Path, acting: set[str] | None = None) -> Found:
    """The newest checkpoint of run folder ``root`` that verifies (and, given ``acting``, is clean: none
    of those flags raised before it); logs the newer ones it skipped. ValueError when there is none."""
    skipped = []
    for folder in checkpoints(root):
        try:
            found = verify(folder)
        except ValueError as err:
            skipped.append(str(err))
            continue
        if acting is not None and not found.clean(acting):
            skipped.append(f"{folder}: flagged {', '.join(found.flags)}")
            continue
        for reason in skipped:
            log.warning("skipping checkpoint %s", reason)
        return found
    what = "clean checkpoint" if acting is not None else "complete checkpoint"
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    legacy = ""
    if (Path(root) / "checkpoint").exists():
        legacy = " (a checkpoint/ folder of the layout before checkpoints/ cannot be resumed)"
    raise ValueError(f"no {what} in {Path(root) / FOLDER}{detail}{legacy}")


def set_aside_newer(root: Path, step: int) -> list[Path]:
    """Move the checkpoint folders of steps after ``step`` (a run continued from an older checkpoint:
    ``--resume-from``, a roll-back) into ``checkpoints/abandoned/``, where resume and pruning never look
    and nothing is deleted; points ``LATEST`` at ``step``'s folder. Returns the new places."""
    moved = []
    for folder in checkpoints(root):
        if int(folder.name[len(PREFIX) :]) > step:
            target = Path(root) / FOLDER / "abandoned" / folder.name
            suffix = 1
            while target.exists():
                target, suffix = target.with_name(f"{folder.name}.{suffix}"), suffix + 1
            target.parent.mkdir(exist_ok=True)
            folder.rename(target)
            moved.append(target)
    if moved:
        write_atomic(Path(root) / FOLDER / "LATEST", step_folder(root, step).name + "\n")
        log.warning("continuing from step %d: newer checkpoints moved to %s", step, moved[0].parent)
    return moved


def prune(root: Path, keep: int, acting: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """Remove all but the newest ``keep`` complete checkpoints, keeping the newest clean one too (no flag of
    ``acting`` before it), and any
    incomplete folder older than the newest complete one (a removal cut short); returns what it removed."""
    kept, removed, clean_kept = 0, [], False
    for folder in checkpoints(root):
        try:
            found = verify(folder, hashes=False)
        except ValueError:
            if kept:  # older than a complete checkpoint: a leftover, never the one to resume
                shutil.rmtree(folder)
                removed.append(folder)
            continue
        if kept < keep or (found.clean(acting) and not clean_kept):
            kept += 1
            clean_kept = clean_kept or found.clean(acting)
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def load_state(folder: Path) -> dict[str, Any]:
    """``trainer_state.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refusing to load objects other than tensors and plain data ({first})") from None


def save_final(folder: Path, model, tokenizer) -> Path:
    """The trained policy in ``folder`` (``<run>/final``) for ``from_pretrained``, replaced atomically."""
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for path in tmp.rglob("*"):
        if path.is_file():
            fsync(path)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_weights(model, folder: Path, adapter: bool) -> None:
    """Load a checkpoint's ``policy/`` weights into the live ``model``: its LoRA adapter (and the modules
    peft saves with it) when ``adapter``, else every weight."""
    folder = Path(folder) / "policy"
    if adapter:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
    else:
        model.load_state_dict(type(model).from_pretrained(folder).state_dict())
