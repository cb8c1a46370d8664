"""``purerl monitor RUN``: replay the hacking detectors over a recorded metrics stream.

RUN is a ``metrics.jsonl`` (or a folder holding one): ``purerl train``'s own, the one the TRL
integration writes into its ``output_dir``, or the one the verl plugin writes into
``trainer.default_local_dir``. Keys with a ``pure/`` prefix (TRL's and verl's trackers) are read
without it. It prints each flag's first step, the action the guards give it, and the step at which a
run under those guards would have stopped or rolled back (``--json``: one object,
``{"flags": {NAME: {"first_step": N, "action": A}}, "stop_step": N or null}``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PREFIXES = ("pure/",)
"""Prefixes the engines' trackers put before purerl's metric names."""


def read_stream(path: str) -> tuple[Path, list[dict]]:
    """The file and its rows, each with an integer ``step`` and purerl's metric names; a bad file, line
    or stream is one ``ValueError`` naming it."""
    from purerl.io.files import read_jsonl

    where = Path(path)
    if where.is_dir():
        where = where / "metrics.jsonl"
    if not where.is_file():
        raise ValueError(
            f"{path}: no such file" + (" (a run folder needs metrics.jsonl)" if where != Path(path) else "")
        )
    rows = read_jsonl(where, _check_row)
    rows = [_plain(r) for r in rows if "run" not in r or "step" in r]  # a header row names the run
    if not any("reward/accuracy" in r for r in rows):
        raise ValueError(
            f"{where}: no row has reward/accuracy (or pure/reward/accuracy): not a training metrics stream"
        )
    return where, rows


def _check_row(row: object) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if "run" in row and "step" not in row:
        return None
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return 'no integer "step"'
    return None


def _plain(row: dict) -> dict:
    """A row with the trackers' prefixes removed (``pure/reward/accuracy`` -> ``reward/accuracy``)."""
    out = {}
    for key, value in row.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def parse_settings(items: list[str]):
    """``(guards, monitor settings)``: the defaults with ``run.guards.FLAG=ACTION`` and
    ``run.monitor.KEY=VALUE`` overrides, checked as ``purerl train`` checks them (one ``ValueError``)."""
    from purerl.config import load_config

    for item in items:
        if not item.startswith(("run.guards.", "run.monitor.")) or "=" not in item:
            raise ValueError(f"{item!r}: expected run.guards.FLAG=ACTION or run.monitor.KEY=VALUE")
    cfg = load_config(None, list(items))
    return cfg.run.guards, cfg.run.monitor


def monitor_report(rows: list[dict], guards, settings=None) -> dict:
    """``{"flags": {name: {"first_step", "action"}}, "stop_step"}`` of a stream under ``guards`` (and the
    detectors' ``settings``, default :class:`purerl.pipeline.monitor.MonitorSettings`)."""
    from purerl.pipeline.monitor import replay

    flags: dict[str, dict] = {}
    stop = None
    for step, raised in replay(rows, settings):
        for name in raised:
            action = getattr(guards, name)
            flags.setdefault(name, {"first_step": step, "action": action})
            if action != "warn" and stop is None:
                stop = step
    return {"flags": flags, "stop_step": stop}


def _table(path: Path, report: dict) -> str:
    lines = [f"{path}: {len(report['flags'])} flag(s)", f"{'flag':<18} {'first step':>10}  action"]
    for name, flag in sorted(report["flags"].items(), key=lambda kv: kv[1]["first_step"]):
        lines.append(f"{name:<18} {flag['first_step']:>10}  {flag['action']}")
    stop = report["stop_step"]
    lines.append(
        f"under these guards the run would have stopped or rolled back at step {stop}"
        if stop is not None
        else "under these guards the run would not have stopped"
    )
    return "\n".join(lines)


def run_monitor(args: argparse.Namespace) -> str:
    guards, settings = parse_settings(args.overrides)
    path, rows = read_stream(args.stream)
    report = monitor_report(rows, guards, settings)
    return json.dumps(report) if args.json else _table(path, report)


def add_monitor(sub) -> None:
    p = sub.add_parser(
        "monitor",
        help="replay the hacking detectors over a recorded run (metrics.jsonl of purerl, TRL or verl)",
        description="Replay purerl's reward-hacking detectors over a recorded metrics stream and print each "
        "flag's first step and the step the guards would have stopped or rolled back the run at.",
    )
    p.add_argument("stream", metavar="RUN", help="a metrics.jsonl, or a run folder holding one")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="guards or detector settings other than the defaults: run.guards.shrinking=stop, "
                   "run.monitor.z=3")  # fmt: skip
    p.set_defaults(run=run_monitor)
