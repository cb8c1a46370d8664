"""The durability order of a checkpoint save, checked call by call rather than by killing a process.

A SIGKILL leaves the page cache intact, so a kill test passes with every fsync removed. Here os.fsync,
os.rename, os.replace and shutil.rmtree are intercepted during real saves (a tiny transformers model,
its tokenizer, a trainer state) and each call is checked against the rules that make a save survive a
power loss on a POSIX file system:

1. whatever a rename publishes (every file and folder under it) was fsynced after its last change, and
   a checkpoint's folders are on disk (``checkpoints/`` synced into the run folder, the run folder into
   its parent); a re-save moves the old ``step-N`` aside only once the new ``.tmp-step-N`` is complete
   and synced;
2. the folder a rename wrote into is fsynced after it: before the next rename into that folder (the
   newest checkpoint is on disk before ``LATEST`` names it; the one exception is the second half of a
   swap, ``step-N -> .trash-step-N`` then ``.tmp-step-N -> step-N``, or ``final -> .final.old`` then
   ``.final.tmp -> final``), before anything is deleted (the checkpoint a removal makes redundant must be
   on disk first), and before the save returns.

Files and folders are followed by inode (they keep it across a rename) with a signature of their state
(size and mtime; a folder's entries), so "synced after its last change" means: the signature at its
last fsync equals the signature now. The test then removes each fsync of a save in turn and checks that
the rules catch every one: none of them is redundant, and the test can see durability.

Why this and not a simulated power loss (dropping every write not synced before a crash point): the
weights and the trainer state are written by safetensors' and torch's native code, whose writes cannot
be intercepted from Python, so a simulation would have to guess what they wrote and when. The order of
the sync and rename calls is what the code controls, it is checked exactly, deterministically and in
under a second, and it is what makes the outcome of a crash at any point one of two complete states.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from purerl.training import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


def signature(path: Path) -> tuple:
    st = path.lstat()
    listing = tuple(sorted(os.listdir(path))) if path.is_dir() else ()
    return st.st_size if not path.is_dir() else 0, st.st_mtime_ns, listing


def tree(path: Path) -> list[Path]:
    return [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]


class Durability:
    """Records the calls of a save and the rules they break (:attr:`broken`)."""

    def __init__(self, monkeypatch, skip: int | None = None):
        self.synced: dict[int, tuple] = {}  # inode -> signature at its last fsync
        self.unsynced: dict[int, str] = {}  # inode of a folder renamed into -> the rename not yet durable
        self.broken: list[str] = []
        self.calls: list[str] = []
        self.fsyncs, self.skip = 0, skip
        real_fsync, real_rename, real_replace, real_rmtree = os.fsync, os.rename, os.replace, shutil.rmtree

        def fsync(fd):
            self.fsyncs += 1
            if self.fsyncs == self.skip:
                return  # this one left out
            real_fsync(fd)
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            self.synced[path.lstat().st_ino] = signature(path)
            self.unsynced.pop(path.lstat().st_ino, None)
            self.calls.append(f"fsync {path.name}")

        def rename(real):
            def wrapped(src, dst, *args, **kwargs):
                src, dst = Path(src), Path(dst)
                self.check_published(src, dst)
                pending = self.unsynced.get(dst.parent.lstat().st_ino, "")
                if pending and pending.split(" -> ")[0] != dst.name:  # not the second half of a swap
                    self.broken.append(f"{pending}: its folder not fsynced before {src.name} -> {dst.name}")
                real(src, dst, *args, **kwargs)
                self.unsynced[dst.parent.lstat().st_ino] = f"{src.name} -> {dst.name}"
                self.calls.append(f"rename {src.name} -> {dst.name}")

            return wrapped

        def rmtree(path, *args, **kwargs):
            self.check_durable(f"removing {Path(path).name}")
            self.calls.append(f"rmtree {Path(path).name}")
            return real_rmtree(path, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename(real_rename))
        monkeypatch.setattr(os, "replace", rename(real_replace))
        monkeypatch.setattr(shutil, "rmtree", rmtree)

    def check_published(self, src: Path, dst: Path) -> None:
        """Rule 1: what the rename publishes was synced after its last change."""
        swaps = {f".trash-{src.name}": f".tmp-{src.name}", f".{src.name}.old": f".{src.name}.tmp"}
        published = src.parent / swaps[dst.name] if dst.name in swaps else src  # moved aside for the new one
        for path in tree(published):
            if self.synced.get(path.lstat().st_ino) != signature(path):
                self.broken.append(f"{path.relative_to(src.parent)} not synced before {src.name} -> {dst.name}")
        homes = [dst.parent, dst.parent.parent] if dst.parent.name == ckpt.FOLDER else []
        for home in homes:  # a checkpoint's folders: checkpoints/ in the run folder, the run folder in its parent
            if home.name not in self.synced.get(home.parent.lstat().st_ino, (0, 0, ()))[2]:
                self.broken.append(f"{home.name}/ not synced into {home.parent.name}/ before {src.name} -> {dst.name}")

    def check_durable(self, what: str) -> None:
        """Rule 2: every rename so far is on disk (its folder fsynced after it)."""
        for rename in self.unsynced.values():
            self.broken.append(f"{rename}: its folder not fsynced before {what}")

    def done(self) -> list[str]:
        self.check_durable("the save returned")
        self.unsynced.clear()
        return self.broken


@pytest.fixture(scope="module")
def tiny(bpe_tokenizer):
    from purerl.config import TinyModelConfig
    from purerl.models.loading import new_policy

    size = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=64)
    return new_policy(bpe_tokenizer, size, seed=0), bpe_tokenizer


def state(step: int) -> dict:
    return {"step": step, "optimizer": {"m": torch.ones(3)}, "rng": ckpt.rng_states()}


def save(run: Path, tiny, step: int) -> Path:
    model, tokenizer = tiny
    return ckpt.save_checkpoint(ckpt.step_folder(run, step), model, tokenizer, state(step), "run: {}\n", [])


def saves(run: Path, tiny) -> None:
    """A first save, a second step, a re-save of that step (the old one moved aside), and pruning."""
    save(run, tiny, 1)
    save(run, tiny, 2)
    save(run, tiny, 2)
    ckpt.prune(run, keep=1)


def test_a_save_syncs_each_file_before_its_rename_and_the_folder_after_it(tmp_path, tiny, monkeypatch):
    log = Durability(monkeypatch)
    saves(tmp_path, tiny)
    assert log.done() == []
    order = [c for c in log.calls if c.startswith(("rename", "rmtree"))]
    assert order == ["rename .tmp-step-000001 -> step-000001", "rename .LATEST.tmp -> LATEST",
                     "rename .tmp-step-000002 -> step-000002", "rename .LATEST.tmp -> LATEST",
                     "rename step-000002 -> .trash-step-000002", "rename .tmp-step-000002 -> step-000002",
                     "rename .LATEST.tmp -> LATEST", "rmtree .trash-step-000002", "rmtree step-000001"]  # fmt: skip
    assert log.fsyncs >= 3 * 10  # every file, folder and parent of three saves


def test_every_fsync_of_a_save_is_needed_and_seen(tmp_path, tiny, monkeypatch):
    """Each fsync of the three saves left out in turn: the rules name what it left unprotected."""
    with monkeypatch.context() as patch:
        count = Durability(patch)
        saves(tmp_path / "count", tiny)
        total = count.fsyncs
    missed = []
    for k in range(1, total + 1):
        with monkeypatch.context() as patch:
            log = Durability(patch, skip=k)
            saves(tmp_path / f"skip{k}", tiny)
            if not log.done():
                missed.append(k)
    assert total >= 30 and missed == []


def test_the_final_policy_and_a_rewritten_log_are_synced_in_order(tmp_path, tiny, monkeypatch):
    from purerl.io.files import write_atomic

    model, tokenizer = tiny
    log = Durability(monkeypatch)
    ckpt.save_final(tmp_path / "final", model, tokenizer)
    ckpt.save_final(tmp_path / "final", model, tokenizer)  # replacing one: the old moved aside, then removed
    write_atomic(tmp_path / "metrics.jsonl", '{"step": 0}\n')
    assert log.done() == []


def test_an_interrupted_save_is_finished_durably(tmp_path, tiny, monkeypatch):
    """A re-save killed between its renames leaves no step-N: the next resume renames the complete
    .tmp-step-N into place (synced), and removes the old one."""
    log = Durability(monkeypatch)
    save(tmp_path, tiny, 1)
    parent = tmp_path / ckpt.FOLDER
    shutil.copytree(parent / "step-000001", parent / ".tmp-step-000001")  # as a kill leaves it: not synced
    (parent / "step-000001").rename(parent / ".trash-step-000001")
    log.broken.clear()
    assert ckpt.newest(tmp_path).folder == parent / "step-000001"
    assert log.done() == [] and sorted(p.name for p in parent.iterdir()) == ["LATEST", "step-000001"]
