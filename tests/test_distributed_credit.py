"""PURE credit over a real 2-process gloo group equals the one-process credit of the whole batch, to
the last bit, also where a prompt's responses sit on both processes; with whitening (the paper's
default) to 1e-6, since the moments are summed in another order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from purerl.pipeline.rewards import assign_credit

WORKER = Path(__file__).with_name("distributed_credit_worker.py")


def test_two_processes_give_the_one_process_credit(tmp_path, load_script, free_port):
    worker = load_script(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, str(WORKER), str(tmp_path), "7"]
    procs = [
        subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for k in (worker.K, 4):
        rows, group_ids = worker.global_batch(7, k)
        halves = (group_ids[: worker.B // 2].tolist(), group_ids[worker.B // 2 :].tolist())
        assert k == worker.K or set(halves[0]) & set(halves[1]), "the K = 4 case must split a group"
        for name, settings in worker.SETTINGS.items():
            whole = worker.as_batch(rows, group_ids)
            assign_credit(whole, settings)  # one process, the whole batch
            for rank, part in enumerate(parts):
                advantages, returns = part[f"k{k}-{name}"]
                mine = slice(rank * (worker.B // 2), (rank + 1) * (worker.B // 2))
                width = advantages.shape[1]
                if settings.whiten:
                    torch.testing.assert_close(advantages, whole.advantages[mine, :width], rtol=0, atol=1e-6)
                    assert advantages.abs().max() > 0.5  # whitened to unit scale, not all zero
                else:
                    assert torch.equal(advantages, whole.advantages[mine, :width]), (k, name, rank)
                assert torch.equal(returns, whole.returns[mine, :width]), (k, name, rank)
                assert (whole.advantages[mine, width:] == 0).all()  # nothing past this process's widest response
