"""A run is never lost: kills inside a checkpoint save, crafted checkpoints, SIGTERM / SIGINT, resume with a
changed config, a folder that already holds a run, and the hacking guards' actions (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from purerl.config import load_config
from purerl.training import checkpoint as ckpt
from purerl.training.run_control import RunStopped
from purerl.training.run_state import STATE_SCHEMA
from purerl.training.trainer import Trainer

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.yaml")
KILL_WORKER = str(Path(__file__).parent / "kill_worker.py")
SETTINGS = [
    "run.threads=1",
    "run.checkpoint_every=1",
    "run.keep_checkpoints=1",
    "run.tensorboard=false",
    "run.guards.heldout_drop=warn",
    "run.guards.accuracy_drop=warn",
    "run.monitor.calibration=2",
]
"""One checkpoint a step and no other (no guard acts unless a test sets one: an acting guard adds the step-0
and evaluation checkpoints the kill points would count); the detectors calibrate on the tiny run's first
2 steps."""


def env(cache: Path) -> dict:
    return {**os.environ, "PURERL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def train(cache: Path, out: Path, *args: str, worker: list[str] | None = None) -> subprocess.CompletedProcess:
    """`purerl train` on the tiny config into ``out`` (through the kill worker when given)."""
    head = [KILL_WORKER, *worker] if worker else ["-m", "purerl"]
    cmd = [sys.executable, *head, "train", TINY, *SETTINGS, f"run.out_dir={out}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env(cache), cwd=ROOT)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def comparable(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows(run)]


def weights(run: Path) -> bytes:
    return (run / "final" / "model.safetensors").read_bytes()


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def straight(tiny_cache, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = train(tiny_cache, out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("point", ["state", "sync", "rename", "renamed", "latest", "prune"])
def test_a_kill_inside_a_save_resumes_exactly(tiny_cache, straight, tmp_path, point):
    run = tmp_path / "run"
    killed = train(tiny_cache, run, worker=["3", point])  # the save of step 3, at `point`
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = train(tiny_cache, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(run) == comparable(straight)
    assert weights(run) == weights(straight)
    left = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith((".tmp", ".trash"))]
    assert left == []


CHAIN = [("trash", 1), ("trashed", 2), ("replace", 3), ("cleanup", 4), ("final", 4)]
"""A kill at each rename of a re-save and of the final save, one per step (tests/kill_worker.py), and
the checkpoint each resume must start from (the save killed between its renames is finished)."""


def test_a_kill_at_every_rename_of_a_resave_resumes_exactly(tiny_cache, straight, tmp_path):
    """Each run is killed at the next point and resumed by the next (its first save is the next step's):
    a re-save moved aside (``trash``), between the renames with no step-N on disk (``trashed``), before
    ``LATEST`` is replaced, before the old step-N is removed (``cleanup``), and inside ``final/``'s swap."""
    run = tmp_path / "run"
    for n, (point, step) in enumerate(CHAIN):
        killed = train(tiny_cache, run, *(["--resume"] if n else []), worker=["1", point])
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        assert ckpt.newest(run).step == step, point  # newest() finishes an interrupted save
    resumed = train(tiny_cache, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(run) == comparable(straight) and weights(run) == weights(straight)
    assert [e["from"].rsplit("/", 1)[1] for e in events(run) if e["event"] == "resume"] == [
        "step-000001", "step-000002", "step-000003", "step-000004", "step-000004"]  # fmt: skip
    left = [
        p.name
        for p in [*(run / "checkpoints").iterdir(), *run.iterdir()]
        if p.name.startswith((".tmp", ".trash", ".final"))
    ]
    assert left == []


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PURERL_EVIL_MARKER']}",))


def _plant(folder: Path, marker: Path, monkeypatch) -> None:
    """Replace a checkpoint's trainer state by a pickle that runs a command, and fix its manifest to match."""
    monkeypatch.setenv("PURERL_EVIL_MARKER", str(marker))
    torch.save({"step": 1, "payload": Evil()}, folder / ckpt.STATE_FILE)
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    path = folder / ckpt.STATE_FILE
    manifest["files"][ckpt.STATE_FILE] = {"bytes": path.stat().st_size, "sha256": ckpt._sha256(path)}
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))


def test_a_crafted_checkpoint_runs_no_code(tiny_cache, straight, tmp_path, monkeypatch):
    run = tmp_path / "run"
    done = train(tiny_cache, run, "run.steps=1")
    assert done.returncode == 0, done.stderr
    marker = tmp_path / "pwned"
    _plant(ckpt.newest(run).folder, marker, monkeypatch)
    with pytest.raises(ValueError, match="refusing to load objects other than tensors"):
        ckpt.load_state(ckpt.newest(run).folder, STATE_SCHEMA)
    out = train(tiny_cache, run, "--resume")
    assert out.returncode == 2 and "refusing to load" in last_line(out.stderr) and "Traceback" not in out.stderr
    assert "weights_only" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def _stop_with(cache: Path, run: Path, signals: list[int]) -> subprocess.CompletedProcess:
    """Start a run, send ``signals`` once its first step is logged, and wait for it."""
    cmd = [sys.executable, "-m", "purerl", "train", TINY, *SETTINGS, f"run.out_dir={run}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(cache), cwd=ROOT)
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists() or len(rows(run)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.05)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize(("signals", "code"), [([signal.SIGTERM], 143), ([signal.SIGINT], 130),
                                               ([signal.SIGINT, signal.SIGINT], 130)])  # fmt: skip
def test_a_signal_stops_cleanly_and_the_run_resumes_exactly(tiny_cache, straight, tmp_path, signals, code):
    run = tmp_path / "run"
    stopped = _stop_with(tiny_cache, run, signals)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr and last_line(stopped.stderr).startswith("purerl train: ")
    if len(signals) == 1:  # at the end of the step: a checkpoint of the step it finished
        step = rows(run)[-1]["step"]
        assert f"after step {step}; checkpoint" in last_line(stopped.stderr)
        assert ckpt.newest(run).step == step
    resumed = train(tiny_cache, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(run) == comparable(straight) and weights(run) == weights(straight)


def test_resume_with_a_changed_config_needs_allow_change(tiny_cache, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_cache, run, "run.steps=2").returncode == 0
    before = (run / "metrics.jsonl").read_text()
    refused = train(tiny_cache, run, "--resume", "algo.lr=0.5")
    assert refused.returncode == 2 and "--allow-change algo.lr" in last_line(refused.stderr)
    fixed = train(tiny_cache, run, "--resume", "policy.lora_rank=4", "--allow-change", "policy")
    assert fixed.returncode == 2 and "policy.lora_rank cannot change" in last_line(fixed.stderr)
    again = train(tiny_cache, run)
    assert again.returncode == 2 and "--resume" in last_line(again.stderr) and "--overwrite" in again.stderr
    assert (run / "metrics.jsonl").read_text() == before  # nothing of the run touched
    done = train(tiny_cache, run, "--resume", "algo.lr=0.5", "run.steps=3", "--allow-change", "algo.lr")
    assert done.returncode == 0, done.stderr
    assert rows(run)[-1]["actor/lr"] == pytest.approx(0.5 * 0.8)  # applied: the new lr, the warm-up at step 3
    (event,) = [e for e in events(run) if e["event"] == "resume"]
    assert event["step"] == 2 and event["changed"]["algo.lr"] == [1e-4, 0.5]
    replaced = train(tiny_cache, run, "run.steps=1", "--overwrite")
    assert replaced.returncode == 0 and [r["step"] for r in rows(run)] == [0, 1]


# ------------------------------------------------------------------------------------------ guards


class Injected(Trainer):
    """A trainer whose step metrics get hand-made values at chosen steps (``once``: the first time only)."""

    def __init__(self, *args, inject: dict[int, dict], once: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.inject, self.once = dict(inject), once

    def train_step(self):
        metrics = super().train_step()
        metrics.update(self.inject.pop(self.step, {}) if self.once else self.inject.get(self.step, {}))
        return metrics


def trainer(cache, tmp_path, monkeypatch, *overrides, inject, once=True) -> Injected:
    monkeypatch.setenv("PURERL_CACHE", str(cache))
    cfg = load_config(TINY, [*SETTINGS, "run.keep_checkpoints=2", f"run.out_dir={tmp_path / 'run'}", *overrides])
    return Injected(cfg, inject=inject, once=once)


ZERO_STEPS = {3: {"response/zero_steps": 0.5}}  # half the answers empty at step 3


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_guard_warn_logs_and_goes_on(tiny_cache, tmp_path, monkeypatch):
    t = trainer(tiny_cache, tmp_path, monkeypatch, inject=ZERO_STEPS)
    t.train()
    run = tmp_path / "run"
    # the tiny policy's answers hit the length cap at every step: `length_to_cap` is raised throughout
    assert [e for e in events(run) if "zero_steps" in e["flags"]] == [
        {"step": 3, "event": "guard_warn", "flags": ["length_to_cap", "zero_steps"]}
    ]
    assert [r["step"] for r in rows(run)] == [0, 1, 2, 3, 4]
    assert "zero_steps" in ckpt.verify(ckpt.step_folder(run, 3)).flags


def test_guard_stop_keeps_the_last_clean_checkpoint(tiny_cache, tmp_path, monkeypatch):
    t = trainer(tiny_cache, tmp_path, monkeypatch, "run.guards.zero_steps=stop", inject=ZERO_STEPS)
    with pytest.raises(RunStopped, match="zero_steps at step 3") as stop:
        t.train()
    assert stop.value.code == 3 and "step-000002" in str(stop.value)
    run = tmp_path / "run"
    assert ckpt.newest(run, acting={"zero_steps"}).step == 2 and rows(run)[-1]["step"] == 3


def test_guard_rollback_returns_to_the_clean_checkpoint_with_a_lower_lr(tiny_cache, tmp_path, monkeypatch):
    t = trainer(tiny_cache, tmp_path, monkeypatch, "run.guards.zero_steps=rollback", inject=ZERO_STEPS)
    t.train()
    run = tmp_path / "run"
    back = [e for e in events(run) if e["event"] == "rollback"]
    assert len(back) == 1 and back[0]["step"] == 3 and back[0]["to"] == 2
    assert back[0]["lr"] == pytest.approx(1e-4 * 0.5) and t.scheduler.base_lrs == [pytest.approx(5e-5)]
    assert [r["step"] for r in rows(run)] == [0, 1, 2, 3, 4]  # one row a step: the abandoned one moved aside
    moved = [json.loads(line) for line in (run / "rolled_back.jsonl").read_text().splitlines()]
    assert [r["step"] for r in moved if r["file"] == "metrics.jsonl"] == [3]
    assert rows(run)[3]["actor/lr"] == pytest.approx(5e-5 * 0.8)


def test_guard_rollback_stops_after_max_rollbacks(tiny_cache, tmp_path, monkeypatch):
    t = trainer(tiny_cache, tmp_path, monkeypatch, "run.guards.zero_steps=rollback", "run.guards.max_rollbacks=1",
                inject=ZERO_STEPS, once=False)  # fmt: skip
    with pytest.raises(RunStopped, match="1 roll-backs already") as stop:
        t.train()
    assert stop.value.code == 3 and [e["event"] for e in events(tmp_path / "run")].count("rollback") == 1


def test_a_nan_loss_stops_with_the_last_checkpoint_intact(tiny_cache, tmp_path, monkeypatch):
    import purerl.training.trainer as trainer_module

    t = trainer(tiny_cache, tmp_path, monkeypatch, inject={})
    real = trainer_module.ppo_clip_loss

    def poisoned(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        return (loss * float("nan") if t.step == 3 else loss), m

    monkeypatch.setattr(trainer_module, "ppo_clip_loss", poisoned)
    with pytest.raises(RunStopped, match="non-finite loss") as stop:
        t.train()
    run = tmp_path / "run"
    assert stop.value.code == 4 and ckpt.newest(run).step == 2 and not ckpt.step_folder(run, 3).exists()


# ------------------------------------------------------------------------------ files, without models


class Saver:
    """Stands in for a model and a tokenizer: ``save_pretrained`` writes one file."""

    def __init__(self, name: str, text: str = "weights"):
        self.name, self.text = name, text

    def save_pretrained(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / self.name).write_text(self.text)


def fake_save(run: Path, step: int, flags=()) -> Path:
    return ckpt.save_checkpoint(ckpt.step_folder(run, step), Saver("model.bin", f"w{step}"), Saver("tok.json"),
                                {"step": step, "rng": ckpt.rng_states()}, "config: 1\n", list(flags))  # fmt: skip


def test_resume_takes_the_newest_checkpoint_that_verifies(tmp_path, caplog):
    for step in (1, 2, 3):
        fake_save(tmp_path, step)
    (ckpt.step_folder(tmp_path, 3) / "policy" / "model.bin").write_text("w3, changed")  # damaged
    (ckpt.step_folder(tmp_path, 4)).mkdir()  # a folder without a manifest
    found = ckpt.newest(tmp_path)
    assert found.step == 2 and "differs from its manifest" in caplog.text and "no manifest.json" in caplog.text
    state = ckpt.load_state(found.folder, {"step": int, "rng": dict})
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_pruning_keeps_the_newest_and_the_newest_clean_one(tmp_path):
    fake_save(tmp_path, 1)
    fake_save(tmp_path, 2, ["zero_steps"])
    fake_save(tmp_path, 3, ["zero_steps"])
    removed = ckpt.prune(tmp_path, keep=1, acting={"zero_steps"})
    assert [p.name for p in removed] == ["step-000002"]
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["step-000003", "step-000001"]
    assert ckpt.newest(tmp_path, acting={"zero_steps"}).step == 1 and ckpt.newest(tmp_path).step == 3
    assert ckpt.prune(tmp_path, keep=1) == [ckpt.step_folder(tmp_path, 1)]  # warn-only flags: every one is clean


def test_a_run_without_a_complete_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoint").mkdir()  # the earlier layout
    with pytest.raises(ValueError, match=r"no complete checkpoint in .*cannot be resumed"):
        ckpt.newest(tmp_path)


def test_a_cut_last_log_line_is_dropped_with_a_warning(tmp_path, caplog):
    from purerl.io.logger import RunLogger, read_rows

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "x": 1')
    assert [r["step"] for r in read_rows(path)] == [0, 1] and "cut last line 3" in caplog.text
    assert RunLogger._truncate(path, 1) == [] and path.read_text() == '{"step": 0}\n{"step": 1}\n'
    path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not JSON"):
        read_rows(path)


def test_a_crash_in_the_first_step_resumes_with_the_start_evaluation(tiny_cache, straight, tmp_path, monkeypatch):
    monkeypatch.setenv("PURERL_CACHE", str(tiny_cache))

    class Crashing(Trainer):
        def segment(self, batch):
            raise RuntimeError("the grader fell over")

    run = tmp_path / "run"
    cfg = load_config(TINY, [*SETTINGS, f"run.out_dir={run}"])
    with pytest.raises(RuntimeError, match="fell over"):
        Crashing(cfg).train()
    assert ckpt.newest(run).step == 0  # the state before step 1, its update never begun
    Trainer(cfg, resume=True).train()
    assert [r["step"] for r in rows(run)] == [0, 1, 2, 3, 4]  # the step-0 evaluation kept
    assert comparable(run) == comparable(straight) and weights(run) == weights(straight)


def test_resume_from_an_older_checkpoint_sets_the_newer_ones_aside(tiny_cache, straight, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_cache, run, "run.keep_checkpoints=5").returncode == 0
    older = ckpt.step_folder(run, 1)
    assert train(tiny_cache, run, "run.keep_checkpoints=5", "run.steps=2", "--resume-from", str(older)).returncode == 0
    aside = sorted(p.name for p in (run / "checkpoints" / "abandoned").iterdir())
    assert aside == ["step-000002", "step-000003", "step-000004"]  # kept, where resume never looks
    assert train(tiny_cache, run, "run.keep_checkpoints=5", "--resume").returncode == 0  # from step 2, not 4
    assert comparable(run) == comparable(straight) and weights(run) == weights(straight)
