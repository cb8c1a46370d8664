"""What a checkpoint loads is what was saved: checks beyond its manifest (:mod:`purerl.training.checkpoint`).

The manifest's sizes and SHA-256 hashes catch a damaged file. These checks catch what gets past them (a
damaged file whose ``manifest.json`` was rewritten to match, or a checkpoint written by something
else), each failure one ``ValueError`` naming the file:

- ``trainer_state.pt``: the CRC-32 of every record (the zip format stores them; ``torch.load`` does not
  check them), then ``torch.load(weights_only=True)`` (objects other than tensors and plain data are
  refused), its keys and their types (a schema), finite floating-point tensors, and the step its
  folder is named for;
- the other files: the SHA-256 of each, recorded inside ``trainer_state.pt`` when it was saved, must
  equal the manifest's;
- the weights: every ``.safetensors`` header, every tensor the model expects and no other, every value
  finite.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

RNG_SCHEMA = {"python": tuple, "numpy": dict, "torch": torch.Tensor}
"""``rng`` of a trainer state (:func:`purerl.training.checkpoint.rng_states`); ``cuda`` (a list) optional."""
OPTIONAL = {"files": dict}
"""Keys any trainer state may hold: ``files``, the SHA-256 of the checkpoint's other files."""
RESTORE_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError)
"""What applying a state that does not fit raises (torch's ``load_state_dict``, ``random.setstate``)."""


def first_line(err: BaseException) -> str:
    """``Type: the first line of the message`` (its first sentence, when that line is long)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > 160 and ". " in text:
        text = text.split(". ")[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_records(path: Path) -> None:
    """Raise ``ValueError`` unless every record of the zip file ``path`` matches its stored CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as err:  # BadZipFile, OSError, EOFError, struct.error, ...: whatever a damaged file raises
        raise ValueError(f"{path}: damaged (not a complete zip archive: {first_line(err)})") from None
    if bad is not None:
        raise ValueError(f"{path}: damaged (its record {bad} fails its CRC-32 check)")


def read_state(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one ``ValueError`` naming ``path``."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"it asks for {found.group(1)}" if found else "or damaged pickle data"
        raise ValueError(f"{path}: refusing to load objects other than tensors and plain data ({what}); a "
                         "checkpoint purerl wrote holds none, so it was changed or crafted") from None  # fmt: skip
    except Exception as err:  # EOFError, RuntimeError, KeyError, ...: a damaged or foreign file
        raise ValueError(f"{path}: unreadable ({first_line(err)})") from None


def check_schema(path: Path, state: Any, schema: dict[str, type], optional: dict[str, type] | None = None) -> None:
    """Raise ``ValueError`` naming ``path`` unless ``state`` is a dict with exactly the keys of ``schema``
    (plus :data:`OPTIONAL` ones and those of ``optional``), each of its type, and an ``rng`` of
    :data:`RNG_SCHEMA`."""
    allowed = {**OPTIONAL, **(optional or {})}
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a trainer state (it holds {type(state).__name__}, not a dict)")
    missing = sorted(set(schema) - set(state))
    unknown = sorted(str(k) for k in set(state) - set(schema) - set(allowed))
    if missing or unknown:
        what = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(unknown)}"] * bool(unknown)
        raise ValueError(f"{path}: not a trainer state of this command ({'; '.join(what)})")
    for key, kind in {**schema, **allowed}.items():
        if key in state and (not isinstance(state[key], kind) or (kind is int and isinstance(state[key], bool))):
            raise ValueError(f"{path}: {key} holds {type(state[key]).__name__}, expected {kind.__name__}")
    if state.get("step", 0) < 0:
        raise ValueError(f"{path}: step {state['step']} is negative")
    rng = state.get("rng", {})
    for key, kind in RNG_SCHEMA.items() if "rng" in schema else ():
        if not isinstance(rng.get(key), kind):
            raise ValueError(f"{path}: rng.{key} holds {type(rng.get(key)).__name__}, expected {kind.__name__}")


def check_finite(path: Path, tree: Any, where: str = "") -> None:
    """Raise ``ValueError`` naming ``path`` and the entry when a floating-point tensor in ``tree`` (dicts,
    lists, tuples) holds a NaN or an infinity."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            count = int((~torch.isfinite(tree)).sum())
            raise ValueError(f"{path}: {count} non-finite value(s) in {where or 'a tensor'}")
    elif isinstance(tree, dict):
        for key, value in tree.items():
            check_finite(path, value, f"{where}.{key}" if where else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            check_finite(path, value, f"{where}[{i}]")


def check_recorded(folder: Path, state: dict, manifest_name: str) -> None:
    """Raise ``ValueError`` naming the file when the SHA-256 that ``state['files']`` recorded at save time
    differs from the manifest's (whose hashes :func:`purerl.training.checkpoint.verify` checked)."""
    recorded = state.get("files")
    if recorded is None:  # a checkpoint saved before the hashes were recorded
        return
    try:
        listed = json.loads((folder / manifest_name).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / manifest_name}: unreadable ({first_line(err)})") from None
    for name, digest in recorded.items():
        entry = listed.get(name) if isinstance(listed, dict) else None
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            raise ValueError(f"{folder / name}: not the file this checkpoint saved (its SHA-256 differs from "
                             "the one trainer_state.pt recorded: changed or damaged, and manifest.json rewritten "
                             "to match)")  # fmt: skip


def check_step(path: Path, state: dict, folder: Path, prefix: str) -> None:
    """Raise ``ValueError`` when a ``<prefix>N`` folder holds the state of another step."""
    name = folder.name.removeprefix(".tmp-")
    if name.startswith(prefix) and name[len(prefix) :].isdigit() and int(name[len(prefix) :]) != state["step"]:
        raise ValueError(f"{path}: holds step {state['step']}, but its folder is {folder.name}")


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names of the safetensors file ``path``; a damaged header is one ``ValueError`` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except Exception as err:  # SafetensorError: a cut file, a damaged header
        raise ValueError(f"{path}: damaged weights file ({first_line(err)})") from None


def read_saved_config(folder: Path) -> dict:
    """The ``config.yaml`` a checkpoint was saved with, as a mapping (one ``ValueError`` naming it if not)."""
    path = Path(folder) / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: unreadable ({first_line(err)})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a config (a mapping of sections)")
    return saved
