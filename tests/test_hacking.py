"""Reward hacking end to end and on the recorded runs (docs/hacking.md).

- A short `purerl train` with an imperfect PRM (a position bias: each later step scores lower, so fewer
  steps are worth more) is hacked (answers shrink, accuracy falls), raises its flags and is stopped by
  its guard, naming a checkpoint whose held-out accuracy is at least the start's.
- The detectors on the recorded streams of benchmarks/results/hacking/ (hacked and clean runs of
  `benchmarks/hacking_runs.py`): each flag's first step is the one docs/hacking.md reports, every hacked
  run is stopped by the default guards no later than the step its held-out greedy accuracy falls more
  than 0.1, and no clean run is.
- `purerl monitor` on a purerl stream (TRL's and verl's: tests/test_trl.py, tests/verl/test_verl_monitor.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ROOT / "benchmarks" / "results" / "hacking"
TABLE = STREAMS / "table.json"


class DepthBiasedPRM:
    """An imperfect PRM with a position bias, as real PRMs' scores drift down along long chains: step j
    scores 1 - 0.5 j whatever it says, so the min-form value rises as answers get shorter."""

    score_range = (-1.0, 1.0)

    @classmethod
    def check_config(cls, spec, task) -> None:
        pass

    @classmethod
    def from_spec(cls, spec, path, task) -> DepthBiasedPRM:
        return cls()

    def score(self, prompts, steps):
        return [[max(-1.0, 1.0 - 0.5 * j) for j in range(len(row))] for row in steps]


@pytest.mark.slow
def test_a_hacked_run_raises_its_flags_and_its_guard_stops_it_at_a_clean_checkpoint(tmp_path):
    from purerl.config import load_config
    from purerl.registry import PRMS
    from purerl.training.run_control import RunStopped
    from purerl.training.trainer import Trainer

    PRMS.register("depth_biased", DepthBiasedPRM, replace=True)
    out = tmp_path / "run"
    cfg = load_config(None, ["prm.kind=depth_biased", "algo.reward=prm", "rollout.prompts_per_step=8",
                             "run.steps=16", "run.eval_every=5", "run.eval_size=64", "run.eval_samples=2",
                             "run.threads=1", f"run.out_dir={out}", "run.tensorboard=false",
                             "run.guards.heldout_drop=warn", "run.guards.accuracy_drop=warn",
                             "run.guards.shrinking=stop"])  # fmt: skip
    with pytest.raises(RunStopped) as stopped:
        Trainer(cfg).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = {}
    for r in rows:
        for key in r:
            if key.startswith("hack/"):
                first.setdefault(key[5:], r["step"])
    last = rows[-1]
    assert stopped.value.code == 3 and last["step"] < 16 and first["shrinking"] == last["step"]
    assert first["heldout_drop"] <= first["shrinking"]  # the held-out fall is seen at the first evaluation
    assert last["response/steps"] < 0.85 * rows[1]["response/steps"]  # answers shrank
    assert last["prm/min_raw"] > rows[1]["prm/min_raw"] and last["reward/accuracy"] < rows[1]["reward/accuracy"]
    # the named checkpoint is a rescue point: no acting flag before it, held-out accuracy at least the start's
    assert str(stopped.value).startswith(f"hacking flag(s) shrinking at step {last['step']} (run.guards: stop)")
    assert str(stopped.value).endswith(str(out / "checkpoints" / "step-000000"))


def _table() -> dict:
    if not TABLE.exists():
        pytest.skip(f"{TABLE} is written by python benchmarks/hacking_table.py --out")
    return json.loads(TABLE.read_text())


def _streams() -> list[Path]:
    return sorted(STREAMS.glob("*.jsonl"))


@pytest.mark.parametrize("path", _streams(), ids=lambda p: p.stem)
def test_each_detector_on_each_recorded_stream_fires_where_the_docs_say(path):
    from purerl.commands.monitor import monitor_report, read_stream
    from purerl.training.run_control import GuardConfig

    documented = {r["name"]: r for r in _table()["runs"]}[path.stem]
    report = monitor_report(read_stream(str(path))[1], GuardConfig())
    assert {k: v["first_step"] for k, v in report["flags"].items()} == documented["flags"]
    assert report["stop_step"] == documented["stop_step"]


@pytest.mark.parametrize("path", _streams(), ids=lambda p: p.stem)
def test_the_default_guards_stop_every_hacked_run_by_its_fall_and_no_clean_run(path):
    from purerl.commands.monitor import monitor_report, read_stream
    from purerl.training.run_control import GuardConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from hacking_table import fall_step

    kind = json.loads(path.read_text().splitlines()[0])["run"]["kind"]
    rows = read_stream(str(path))[1]
    stop = monitor_report(rows, GuardConfig())["stop_step"]
    if kind == "clean":
        assert stop is None
    else:
        fall = fall_step(rows)
        assert stop is not None and (fall is None or stop <= fall), (stop, fall)


def test_purerl_monitor_prints_the_flags_of_a_purerl_stream():
    path = next(p for p in _streams() if p.stem.startswith("exact_prm"))
    out = subprocess.run([sys.executable, "-m", "purerl", "monitor", str(path), "--json"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    documented = {r["name"]: r for r in _table()["runs"]}[path.stem]
    assert {k: v["first_step"] for k, v in report["flags"].items()} == documented["flags"]
    assert report["stop_step"] == documented["stop_step"] and report["flags"]["heldout_drop"]["action"] == "rollback"
    table = subprocess.run([sys.executable, "-m", "purerl", "monitor", str(path)], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)  # fmt: skip
    assert f"would have stopped or rolled back at step {documented['stop_step']}" in table.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"step": 1, "reward/accuracy": 0.5}\nnot json\n{"step": 3}\n', "line 2: not JSON"),
     ('{"step": "one", "reward/accuracy": 0.5}\n{"step": 2}\n', 'line 1: no integer "step"'),
     ('{"step": 1, "loss": 0.5}\n', "no row has reward/accuracy")],
)  # fmt: skip
def test_purerl_monitor_names_a_bad_stream_in_one_line(tmp_path, content, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(content)
    out = subprocess.run([sys.executable, "-m", "purerl", "monitor", str(path)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr
    bad = subprocess.run([sys.executable, "-m", "purerl", "monitor", str(path), "run.guards.nothing=stop"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and "run.guards: unknown key(s) ['nothing']" in bad.stderr
