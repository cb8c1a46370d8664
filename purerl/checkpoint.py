"""Save and resume a run: model, optimizer, scheduler, RNG states, data position, metrics so far.

A checkpoint is a folder written beside its final place and renamed into it, so a crash while saving
never leaves a half-written checkpoint where the last good one was.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def rng_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def save_checkpoint(folder: str | Path, model, tokenizer, state: dict[str, Any]) -> Path:
    """Write ``model`` (``save_pretrained``), its tokenizer and ``state`` (optimizer etc.) atomically."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "policy")
    tokenizer.save_pretrained(tmp / "policy")
    torch.save({**state, "rng": rng_states()}, tmp / STATE_FILE)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def load_checkpoint(folder: str | Path) -> dict[str, Any]:
    """The saved state; the policy weights are in ``folder/policy`` for ``from_pretrained``."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {folder} (missing {STATE_FILE})")
    return torch.load(path, weights_only=False)
