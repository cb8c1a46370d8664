"""Runs `purerl train ARGS...` and SIGKILLs itself inside its Nth checkpoint save, at a named point.

``python tests/kill_worker.py SAVE POINT train ARGS...``; the points, in the order a save reaches them:

- ``state``: the policy written into ``.tmp-step-N``, the trainer state not yet;
- ``sync``: every file written, the third fsync done (the folder not yet renamed into place);
- ``rename``: the complete ``.tmp-step-N`` about to be renamed to ``step-N``;
- ``latest``: ``step-N`` in place, ``LATEST`` still naming the previous one;
- ``prune``: half the files of the oldest checkpoint removed by the pruning, the rest not.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(save_number: int, point: str) -> None:
    import torch

    from purerl.training import checkpoint

    saves = {"n": 0, "fsyncs": 0}
    original_save, original_fsync = checkpoint.save_checkpoint, checkpoint.fsync
    original_torch_save, original_rename = torch.save, pathlib.Path.rename
    original_write, original_rmtree = checkpoint.write_atomic, shutil.rmtree

    def armed() -> bool:
        return saves["n"] == save_number

    def save_checkpoint(*args, **kwargs):
        saves["n"] += 1
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
        if armed() and point == "rename" and self.name.startswith(".tmp-step-"):
            die()
        return original_rename(self, target)

    def write_atomic(path, text):
        if armed() and point == "latest":
            die()
        return original_write(path, text)

    def rmtree(path, *args, **kwargs):
        path = pathlib.Path(path)
        if armed() and point == "prune" and path.name.startswith("step-"):
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for f in files[: len(files) // 2]:
                f.unlink()
            die()
        return original_rmtree(path, *args, **kwargs)

    checkpoint.save_checkpoint, checkpoint.fsync, checkpoint.write_atomic = save_checkpoint, fsync, write_atomic
    torch.save, pathlib.Path.rename, shutil.rmtree = torch_save, rename, rmtree


if __name__ == "__main__":
    install(int(sys.argv[1]), sys.argv[2])
    from purerl.commands.cli import main

    sys.exit(main(sys.argv[3:]))
