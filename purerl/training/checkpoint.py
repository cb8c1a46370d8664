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
folder cannot run code; it is refused with a one-line error. It also records the SHA-256 of the other
files, and what is loaded is checked beyond the manifest (:mod:`purerl.training.integrity`): a damaged
file whose manifest was rewritten to match is one line naming the file, never a crash or a NaN run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from purerl.io.files import fsync, write_atomic
from purerl.training import integrity

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


def _hashes(folder: Path, paths: list[Path]) -> dict[str, dict]:
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in paths}


def save_checkpoint(folder: Path, model, tokenizer, state: dict[str, Any], config_text: str, flags: list[str]) -> Path:
    """Write a checkpoint into ``folder`` (``<run>/checkpoints/step-N``) atomically; returns ``folder``.

    ``state`` must hold plain data and tensors only (it is loaded with ``weights_only=True``); the
    SHA-256 of the other files is added to it as ``files``.
    ``flags``: the hacking flags raised since the previous checkpoint (none: it passed every detector).
    """
    folder = Path(folder)
    parent = folder.parent
    if not parent.is_dir():  # the first save: checkpoints/ (and the run folder) made reachable on disk too
        parent.mkdir(parents=True)
        fsync(parent.parent)
        with contextlib.suppress(OSError):  # a parent folder we may not read
            fsync(parent.parent.parent)
    tmp = parent / f".tmp-{folder.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / "policy")
    tokenizer.save_pretrained(tmp / "policy")
    (tmp / "config.yaml").write_text(config_text, encoding="utf-8")
    files = _hashes(tmp, _files(tmp))
    torch.save({**state, "files": {name: meta["sha256"] for name, meta in files.items()}}, tmp / STATE_FILE)
    files.update(_hashes(tmp, [tmp / STATE_FILE]))
    manifest = {"step": state["step"], "flags": sorted(flags), "files": dict(sorted(files.items()))}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _sync_tree(tmp)
    if folder.exists():  # the same step again: move the old one aside first (see _finish_interrupted)
        folder.rename(parent / f".trash-{folder.name}")
    tmp.rename(folder)
    fsync(parent)
    write_atomic(parent / "LATEST", folder.name + "\n")
    _clean_leftovers(parent)
    return folder


def _sync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then every folder, deepest first, ``folder`` last."""
    paths = sorted(folder.rglob("*"), key=lambda p: (p.is_dir(), -len(p.parts)))
    for path in [*paths, folder]:
        fsync(path)


def _finish_interrupted(parent: Path) -> None:
    """Finish a save killed between its renames: a ``step-N`` missing while a complete ``.tmp-step-N`` (the
    new save) or ``.trash-step-N`` (the one it replaces) verifies is renamed into place, the newer first;
    a ``.trash-step-N`` beside its ``step-N`` is removed."""
    for kind in (".tmp-", ".trash-"):
        for stale in sorted(parent.glob(f"{kind}{PREFIX}*")):
            folder = parent / stale.name.removeprefix(kind)
            if folder.exists() or not stale.is_dir():
                continue
            try:
                verify(stale)
            except ValueError:
                continue  # unfinished: removed by the next save
            _sync_tree(stale)  # a kill (not a power loss) may have left it in the page cache only
            stale.rename(folder)
            fsync(parent)
            log.warning("finished an interrupted save: %s", folder)
    for stale in parent.glob(f".trash-{PREFIX}*"):
        if (parent / stale.name.removeprefix(".trash-")).exists():
            shutil.rmtree(stale, ignore_errors=True)


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
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files, step, flags = manifest["files"], int(manifest["step"]), [str(f) for f in manifest["flags"]]
        if not isinstance(files, dict) or not all(isinstance(m, dict) for m in files.values()):
            raise TypeError("files is not a mapping of file names to sizes and hashes")
    except FileNotFoundError:
        raise ValueError(f"{folder}: no {MANIFEST} (an unfinished save)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}/{MANIFEST}: unreadable ({err})") from None
    for name, meta in files.items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute() or not path.is_file():
            raise ValueError(f"{folder}: {name} is missing")
        if path.stat().st_size != meta.get("bytes") or (hashes and _sha256(path) != meta.get("sha256")):
            raise ValueError(f"{folder}: {name} differs from its manifest (changed or damaged)")
    return Found(folder, step, flags)


def resume_point(path: str | Path) -> Found:
    """The checkpoint ``--resume-from`` names, verified; a path that is no checkpoint folder says what it is."""
    folder = Path(path)
    if not folder.exists():
        raise ValueError(f"--resume-from {path}: no such folder")
    if not folder.is_dir():
        raise ValueError(f"--resume-from {path}: a file, not a checkpoint folder")
    if not (folder / MANIFEST).exists() and (folder / FOLDER).is_dir():
        raise ValueError(f"--resume-from {path}: a run folder, not one of its checkpoints; give "
                         f"{folder / FOLDER}/{PREFIX}N, or use --resume for its newest")  # fmt: skip
    return verify(folder)


def checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders of a run, newest first (complete or not)."""
    parent = Path(root) / FOLDER
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]), reverse=True)


def newest(root: Path, acting: set[str] | None = None, accept: Callable[[Found], bool] | None = None) -> Found:
    """The newest checkpoint of run folder ``root`` that verifies (and, given ``acting``, is clean: none
    of those flags raised before it; given ``accept``, one it accepts); logs the newer ones it skipped.
    ValueError when there is none."""
    if (Path(root) / FOLDER).is_dir():
        _finish_interrupted(Path(root) / FOLDER)
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
        if accept is not None and not accept(found):
            skipped.append(f"{folder}: its held-out accuracy is below the start's")
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


def prune(root: Path, keep: int, acting: set[str] | frozenset[str] = frozenset(),
          accept: Callable[[Found], bool] | None = None) -> list[Path]:  # fmt: skip
    """Remove all but the newest ``keep`` complete checkpoints, keeping the newest clean one too (no flag of
    ``acting`` before it, and one ``accept`` accepts), and any incomplete folder older than the newest
    complete one (a removal cut short); returns what it removed."""
    kept, removed, clean_kept = 0, [], False
    for folder in checkpoints(root):
        try:
            found = verify(folder, hashes=False)
        except ValueError:
            if kept:  # older than a complete checkpoint: a leftover, never the one to resume
                shutil.rmtree(folder)
                removed.append(folder)
            continue
        clean = found.clean(acting) and (accept is None or accept(found))
        if kept < keep or (clean and not clean_kept):
            kept += 1
            clean_kept = clean_kept or clean
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def load_state(folder: Path, schema: dict[str, type], optional: dict[str, type] | None = None) -> dict[str, Any]:
    """``trainer_state.pt`` of a verified checkpoint (:func:`verify`), loaded with ``weights_only=True``
    and checked (:mod:`purerl.training.integrity`): its records' CRC-32, the keys and types of ``schema``,
    finite tensors, its step, and the hashes it recorded of the other files against the manifest's."""
    folder = Path(folder)
    path = folder / STATE_FILE
    integrity.check_records(path)
    state = integrity.read_state(path)
    integrity.check_schema(path, state, schema, optional)
    integrity.check_finite(path, state)
    integrity.check_step(path, state, folder, PREFIX)
    integrity.check_recorded(folder, state, MANIFEST)
    return state


def save_final(folder: Path, model, tokenizer) -> Path:
    """The trained policy in ``folder`` (``<run>/final``) for ``from_pretrained``, replaced atomically."""
    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _sync_tree(tmp)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_weights(model, folder: Path, adapter: bool) -> None:
    """Load a checkpoint's ``policy/`` weights into the live ``model``: its LoRA adapter (and the modules
    peft saves with it) when ``adapter``, else every weight. The weights are checked before the live
    model is touched: each file's header, the tensor names, finite values (one ``ValueError`` naming the
    file)."""
    folder = Path(folder) / "policy"
    owner = {}
    for path in sorted(folder.glob("*.safetensors")):
        owner.update(dict.fromkeys(integrity.safetensors_keys(path), path))
    if not owner:
        raise ValueError(f"{folder}: no .safetensors weights")
    tensors = _adapter_tensors(folder) if adapter else _full_tensors(model, folder)
    bad = next((name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        integrity.check_finite(owner.get(bad, folder), tensors[bad], bad)
    if adapter:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, tensors)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ValueError(f"{folder}/adapter_model.safetensors: weights the model does not have ({unexpected[0]})")
    else:
        model.load_state_dict(tensors)


def _adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    try:
        return load_file(path)
    except Exception as err:
        raise ValueError(f"{path}: cannot be loaded ({integrity.first_line(err)})") from None


def _full_tensors(model, folder: Path) -> dict[str, torch.Tensor]:
    """Every weight of the model class saved in ``folder``, loaded apart from the live model."""
    try:
        loaded, info = type(model).from_pretrained(folder, output_loading_info=True)
    except Exception as err:  # a damaged config.json, a size that does not fit, ...
        raise ValueError(f"{folder}: the weights cannot be loaded ({integrity.first_line(err)})") from None
    wrong = [*info.get("missing_keys", []), *info.get("unexpected_keys", []), *info.get("mismatched_keys", [])]
    if wrong:
        raise ValueError(f"{folder}: its weights do not fit the model ({len(wrong)} names differ, e.g. {wrong[0]})")
    return loaded.state_dict()
