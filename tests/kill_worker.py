"""Runs `purerl train ARGS...` and SIGKILLs itself inside its Nth checkpoint save, at a named point.

``python tests/kill_worker.py SAVE POINT train ARGS...``; the points, in the order a save reaches them:

- ``state``: the policy written into ``.tmp-step-N``, the trainer state not yet;
- ``sync``: every file written, the third fsync done (the folder not yet renamed into place);
- ``trash``: a save of a step that has a checkpoint already (see below): the complete new
  ``.tmp-step-N`` about to move the old ``step-N`` aside to ``.trash-step-N``;
- ``trashed``: the same, between the two renames: ``step-N`` moved to ``.trash-step-N``, the new
  ``.tmp-step-N`` not yet renamed into place (no ``step-N`` on disk);
- ``rename``: the complete ``.tmp-step-N`` about to be renamed to ``step-N``;
- ``renamed``: ``step-N`` renamed into place, its parent folder not yet fsynced;
- ``latest``: ``step-N`` in place, ``LATEST`` not yet written;
- ``replace``: the new ``LATEST`` written and synced beside the old one, not yet renamed over it;
- ``cleanup``: a save of a step that has a checkpoint already, done, the old one in ``.trash-step-N``
  not yet removed;
- ``prune``: half the files of the oldest checkpoint removed by the pruning, the rest not;
- ``final``: the last checkpoint saved, ``final/``'s complete ``.final.tmp`` about to be renamed into place
  (the save number is ignored).

``trash``, ``trashed`` and ``cleanup`` make the Nth save a save of the same step twice: the first
completes, the second (the one killed) finds ``step-N`` on disk and takes the path of a re-save.
``purerl train`` never saves a step twice (a roll-back moves later checkpoints to ``abandoned/``
first); ``purerl train-prm`` does, when a newer checkpoint failed to verify and was skipped on resume.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys

RESAVE = ("trash", "trashed", "cleanup")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(save_number: int, point: str) -> None:
    import torch

    from purerl.training import checkpoint

    saves = {"n": 0, "fsyncs": 0, "first": False}
    original_save, original_fsync = checkpoint.save_checkpoint, checkpoint.fsync
    original_torch_save, original_rename = torch.save, pathlib.Path.rename
    original_write, original_rmtree, original_replace = checkpoint.write_atomic, shutil.rmtree, os.replace

    def armed() -> bool:  # from the Nth save on, until the next one (its pruning included)
        return saves["n"] == save_number and not saves["first"]

    def save_checkpoint(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == save_number and point in RESAVE:
            saves["first"] = True
            original_save(*args, **kwargs)  # the first save of the step, complete and not armed
            saves["first"] = False
        return original_save(*args, **kwargs)

    def torch_save(*args, **kwargs):
        if armed() and point == "state":
            die()
        return original_torch_save(*args, **kwargs)

    def fsync(path):
        original_fsync(path)
        saves["fsyncs"] += armed()
        if armed() and point == "sync" and saves["fsyncs"] == 3:
            die()

    def rename(self, target):
        tmp = self.name.startswith(".tmp-step-")
        if armed() and point == "trash" and pathlib.Path(target).name.startswith(".trash-step-"):
            die()
        moved_aside = tmp and not (self.parent / self.name.removeprefix(".tmp-")).exists()
        if armed() and tmp and (point == "rename" or (point == "trashed" and moved_aside)):
            die()
        if point == "final" and self.name == ".final.tmp":
            die()
        result = original_rename(self, target)
        if armed() and point == "renamed" and tmp:
            die()
        return result

    def write_atomic(path, text):
        if armed() and point == "latest":
            die()
        return original_write(path, text)

    def replace(src, dst, *args, **kwargs):
        if armed() and point == "replace" and pathlib.Path(dst).name == "LATEST":
            die()
        return original_replace(src, dst, *args, **kwargs)

    def rmtree(path, *args, **kwargs):
        path = pathlib.Path(path)
        if armed() and point == "cleanup" and path.name.startswith(".trash-step-"):
            die()
        if armed() and point == "prune" and path.name.startswith("step-"):
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for f in files[: len(files) // 2]:
                f.unlink()
            die()
        return original_rmtree(path, *args, **kwargs)

    checkpoint.save_checkpoint, checkpoint.fsync, checkpoint.write_atomic = save_checkpoint, fsync, write_atomic
    torch.save, pathlib.Path.rename, shutil.rmtree, os.replace = torch_save, rename, rmtree, replace


if __name__ == "__main__":
    install(int(sys.argv[1]), sys.argv[2])
    from purerl.commands.cli import main

    sys.exit(main(sys.argv[3:]))
