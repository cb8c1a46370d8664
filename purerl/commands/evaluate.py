"""`purerl eval`: greedy pass@1 and sampled avg@k / pass@k of a policy on math benchmarks.

Every response is appended to ``<out>/responses.jsonl`` as soon as its batch finishes (with its
extracted answer and grade), so a crashed or stopped evaluation loses at most the batch in flight:
running the same command again skips what is already there. A rerun into a folder whose responses
were made with other settings (:data:`RESUME_KEYS`, read from its ``config.json``) is refused, naming
each difference; ``overwrite`` (``--overwrite``) deletes the old responses and results first. At the
end: ``results.json``, ``results.csv`` and a table like the PURE paper's Table 2 (one column per
benchmark and their mean), with the number of prompts cut to fit the policy's context
(:mod:`purerl.rollout.hf`).

Every setting is checked before anything loads (:func:`check_eval`).

pass@k uses the unbiased estimator ``1 - C(n - c, k) / C(n, k)`` (Chen et al., 2021) over ``n``
samples with ``c`` correct; avg@k is the mean accuracy of the samples.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from purerl.config.validation import check_device, check_model_path
from purerl.grading import EVAL_EXTRACTORS, EXTRACTORS, GradingConfig, extract_answer, grade, start_worker
from purerl.io.data import BENCHMARKS, DataConfig, MathExample, benchmark_path, load_examples
from purerl.io.files import read_jsonl
from purerl.tasks.prompts import TEMPLATES, format_prompt

if TYPE_CHECKING:
    from purerl.rollout import Answers

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = os.environ.get(
    "PURERL_BENCHMARKS", str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks")
)


@dataclass
class EvalConfig:
    """What to evaluate and how."""

    policy: str = "smollm2-135m-instruct"
    """A folder, hub id, ``.gguf`` file or known model name (see ``purerl.models.names.KNOWN_MODELS``)."""
    dtype: str = "float32"
    device: str = "cpu"
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    """Benchmark names (``<data_dir>/<name>.jsonl``) or dataset files."""
    data_dir: str = DEFAULT_DATA_DIR
    limit: int | None = None
    """First N problems of each benchmark (None: all)."""
    template: str = "chat"
    """Prompt template (``purerl.tasks.prompts.TEMPLATES``)."""
    max_new_tokens: int = 1024
    batch_size: int = 16
    greedy: bool = True
    """Greedy decoding, one response per problem (pass@1)."""
    samples: int = 0
    """Sampled responses per problem for avg@k / pass@k (0: none)."""
    temperature: float = 1.0
    seed: int = 0
    out: str = "runs/eval"
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    extract: tuple[str, ...] = EXTRACTORS
    """Answer extractors, in order (``purerl.grading``)."""
    overwrite: bool = False
    """Delete ``out``'s previous responses and results first (else they are resumed, same settings only)."""


RESUME_KEYS = ("policy", "dtype", "template", "max_new_tokens", "greedy", "samples", "temperature", "seed", "extract")
"""Settings the responses in an ``out`` folder were made with, which a rerun into it must match (a
protocol counts through the settings it sets; ``temperature`` only where a run samples). Not keyed:
``benchmarks``, ``limit`` and ``data_dir`` only select problems (responses are kept per benchmark and
row); ``batch_size``, ``device`` and ``threads`` do not change what is asked for (a greedy answer may
differ between them only where two logits tie within rounding)."""


PROTOCOLS: dict[str, dict] = {
    "pure": {
        "template": "qwen25_math_cot_ft", "max_new_tokens": 3000, "greedy": True, "samples": 0,
        "benchmarks": list(BENCHMARKS), "extract": EVAL_EXTRACTORS,
    },
}  # fmt: skip
"""Named evaluation settings. ``pure``: the PURE authors' (their ``eval/sh/eval.sh``, which runs
Qwen2.5-Math's evaluation code): prompt type ``qwen25-math-cot-ft`` without a chat template, greedy
decoding (temperature 0, one sample), at most 3000 new tokens, MATH-500, Minerva Math, OlympiadBench,
AIME24 and AMC23, and an answer taken from the last boxed expression, else after "answer is", else
the last number of the final sentence."""


def with_protocol(cfg: EvalConfig, name: str, benchmarks_given: bool = False) -> EvalConfig:
    """``cfg`` with the settings of protocol ``name`` (benchmarks only where none were given)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    settings = dict(PROTOCOLS[name])
    if benchmarks_given:
        settings.pop("benchmarks")
    return replace(cfg, **settings)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), round(pass_at_k(4, 1, 2), 4)
    (0.25, 1.0, 0.5)
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


RECORD_FIELDS = {"benchmark": str, "row": int, "mode": str, "sample": int, "correct": bool}
"""Fields of a ``responses.jsonl`` record that a resumed evaluation reads."""


def _bad_record(rec: object) -> str | None:
    """What is wrong with a line of ``responses.jsonl`` (None: a record this command wrote)."""
    if not isinstance(rec, dict):
        return "not a response record (a JSON object)"
    for name, kind in RECORD_FIELDS.items():
        value = rec.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"not a response record ({name!r} should be {kind.__name__}, got {value!r})"
    if rec["mode"] not in ("greedy", "sample"):
        return f"not a response record (mode {rec['mode']!r})"
    return None


def _read_done(path: Path) -> list[dict]:
    """The records of an earlier run; a cut last line is dropped (and cut off the file), any other bad
    line is an error naming it (:func:`purerl.io.files.read_jsonl`)."""
    return read_jsonl(path, _bad_record, repair=True)


def check_eval(cfg: EvalConfig) -> None:
    """Raise ``ValueError`` naming the flag of the first setting that cannot work; loads nothing (torch
    only to ask about a ``device`` other than ``cpu``)."""
    at_least = {"--limit": (cfg.limit, 1), "--batch-size": (cfg.batch_size, 1), "--samples": (cfg.samples, 0),
                "--max-new-tokens": (cfg.max_new_tokens, 1), "--threads": (cfg.threads, 0)}  # fmt: skip
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if not cfg.greedy and cfg.samples == 0:
        raise ValueError("nothing to evaluate: --no-greedy needs --samples > 0")
    if cfg.samples and not cfg.temperature > 0:
        raise ValueError(f"--temperature must be > 0 to sample (--samples {cfg.samples}), got {cfg.temperature}")
    if cfg.template not in TEMPLATES:
        raise ValueError(f"--template {cfg.template!r}: choose one of {', '.join(TEMPLATES)}")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ValueError(f"--out {cfg.out}: a file, not a folder")
    check_device("--device", cfg.device)
    check_model_path("--policy", cfg.policy)


def _resume_settings(settings: dict, samples: bool) -> dict:
    """The :data:`RESUME_KEYS` of a config dict, comparable across runs (an existing policy path resolved)."""
    out = {k: settings[k] for k in RESUME_KEYS if k in settings and (k != "temperature" or samples)}
    if isinstance(out.get("policy"), str) and Path(out["policy"]).expanduser().exists():
        out["policy"] = str(Path(out["policy"]).expanduser().resolve())
    return json.loads(json.dumps(out))  # tuples as lists, as config.json has them


def check_resume(cfg: EvalConfig) -> None:
    """Raise ``ValueError`` when ``cfg.out`` holds responses made with other settings (:data:`RESUME_KEYS`),
    naming each differing setting with its old and new value."""
    out = Path(cfg.out)
    if not (out / "responses.jsonl").is_file() or not (out / "responses.jsonl").stat().st_size:
        return
    advice = "use another --out, or --overwrite to delete them"
    try:
        old = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.warning("%s has responses but no config.json: resuming them as if made with these settings", out)
        return
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        raise ValueError(f"--out {out}: its config.json cannot be read, so its responses cannot be checked; {advice}")
    samples = bool(cfg.samples or old.get("samples"))
    before, now = _resume_settings(old, samples), _resume_settings(asdict(cfg), samples)
    changed = [f"{k} {before[k]!r} -> {now[k]!r}" for k in now if k in before and before[k] != now[k]]
    if changed:
        raise ValueError(f"--out {out} holds responses made with other settings ({'; '.join(changed)}); {advice}")


def _clear(out: Path) -> None:
    """Delete what an earlier evaluation wrote into ``out`` (``--overwrite``); other files stay."""
    for name in ("responses.jsonl", "results.json", "results.csv", "config.json"):
        if (out / name).is_file():
            (out / name).unlink()
            log.info("--overwrite: deleted %s", out / name)


def run_eval(cfg: EvalConfig) -> str:
    """Check the settings, evaluate, write the files, and return the table."""
    import torch

    check_eval(cfg)
    out = Path(cfg.out)
    if cfg.overwrite:
        _clear(out)
    check_resume(cfg)
    records_path = out / "responses.jsonl"
    done = _read_done(records_path)  # before anything is written or loaded: a bad line is named, none lost
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    benches = {}
    for name in cfg.benchmarks:
        path = benchmark_path(name, cfg.data_dir)
        benches[Path(name).stem] = load_examples(DataConfig(path=str(path), limit=cfg.limit), require_answer=True)
    todo = _todo(cfg, benches, done)
    if todo:
        start_worker()  # the grading helper starts while the model loads
    log.info("%d responses to generate (%d already in %s)", len(todo), len(done), records_path)
    speed = _generate_all(cfg, todo, done, records_path)
    results = summarize(done, list(benches), cfg.samples)
    results["tokens_per_second"] = speed
    (out / "results.json").write_text(json.dumps(results, indent=2))
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", *benches, "avg"])
        for metric, row in results["table"].items():
            w.writerow([metric, *(_fmt(row.get(b)) for b in benches), _fmt(row.get("avg"))])
    return format_results(results, list(benches))


def _todo(cfg: EvalConfig, benches: dict[str, list[MathExample]], done: list[dict]) -> list[tuple]:
    """``(benchmark, example, mode, sample)`` of every response not already in ``done``."""
    seen = {(r["benchmark"], r["row"], r["mode"], r["sample"]) for r in done}
    todo = []
    for bench, examples in benches.items():
        for e in examples:
            jobs = ([("greedy", 0)] if cfg.greedy else []) + [("sample", i) for i in range(cfg.samples)]
            todo += [(bench, e, mode, i) for mode, i in jobs if (bench, e.row, mode, i) not in seen]
    return todo


def _generate_all(cfg: EvalConfig, todo: list[tuple], done: list[dict], records_path: Path) -> float | None:
    """Generate, grade and append (to ``done`` and the file) every response of ``todo``, greedy ones
    first, in batches; returns the generation speed in tokens/s (None if nothing was generated)."""
    import torch

    from purerl.models.loading import load_policy
    from purerl.rollout import sample_answers
    from purerl.rollout.hf import HFGenerate

    backend = None  # the policy loads only if something is left to generate
    tokens = seconds = 0.0
    for mode in ("greedy", "sample"):
        jobs = [j for j in todo if j[2] == mode]
        for start in range(0, len(jobs), cfg.batch_size):
            if backend is None:
                model, tokenizer = load_policy(cfg.policy, dtype=cfg.dtype, device=cfg.device)
                backend = HFGenerate(model.eval(), tokenizer)
            batch = jobs[start : start + cfg.batch_size]
            # seeded by the batch's place in the whole run, so a resumed run samples what it would have
            torch.manual_seed(cfg.seed * 1_000_003 + len(done) + start)
            prompts = [format_prompt(e.question, cfg.template, backend.tokenizer) for _, e, _, _ in batch]
            t0 = time.time()
            answers = sample_answers(backend, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                     greedy=mode == "greedy")  # fmt: skip
            seconds += time.time() - t0
            tokens += answers.rollout.response_mask.sum().item()
            _append_records(records_path, done, batch, answers, GradingConfig(extract=tuple(cfg.extract)))
            log.info("%s: %d / %d responses (%.1f tokens/s)", mode, start + len(batch), len(jobs), tokens / seconds)
    return tokens / seconds if seconds else None


def _append_records(records_path: Path, done: list[dict], batch: list[tuple], answers: Answers,
                    grading: GradingConfig) -> None:  # fmt: skip
    """Grade a batch's responses and append their records to the file (flushed to disk) and ``done``."""
    with records_path.open("a") as f:
        rollout = answers.rollout
        for (bench, e, mode, i), text, cut, prompt_cut in zip(batch, answers.texts, rollout.truncated.tolist(),
                                                             rollout.prompt_cut.tolist()):  # fmt: skip
            rec = {
                "benchmark": bench,
                "row": e.row,
                "mode": mode,
                "sample": i,
                "gold": e.gold,
                "answer": extract_answer(text, grading.extract),
                "correct": bool(grade(text, e.gold, grading)),
                "truncated": cut,
                "prompt_cut": prompt_cut,
                "response": text,
            }
            f.write(json.dumps(rec) + "\n")
            done.append(rec)
        f.flush()
        os.fsync(f.fileno())


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def summarize(records: list[dict], benches: list[str], samples: int) -> dict:
    """``{"table": {metric: {benchmark: value, "avg": mean}}, "counts": {...}, "prompts_cut": n}`` from
    response records; ``prompts_cut`` counts problems whose prompt was cut to fit the context."""
    table: dict[str, dict[str, float]] = {}
    counts = {}
    for bench in benches:
        rows = [r for r in records if r["benchmark"] == bench]
        greedy = [r["correct"] for r in rows if r["mode"] == "greedy"]
        counts[bench] = {"problems": len({r["row"] for r in rows}), "greedy": len(greedy),
                         "prompts_cut": len({r["row"] for r in rows if r.get("prompt_cut")})}  # fmt: skip
        if greedy:
            table.setdefault("greedy pass@1", {})[bench] = sum(greedy) / len(greedy)
        by_row: dict[int, list[bool]] = {}
        for r in rows:
            if r["mode"] == "sample":
                by_row.setdefault(r["row"], []).append(r["correct"])
        if by_row:
            n = min(len(v) for v in by_row.values())
            table.setdefault(f"avg@{n}", {})[bench] = sum(sum(v[:n]) / n for v in by_row.values()) / len(by_row)
            table.setdefault(f"pass@{n}", {})[bench] = sum(pass_at_k(n, sum(v[:n]), n) for v in by_row.values()) / len(
                by_row
            )
    for row in table.values():
        row["avg"] = sum(row.values()) / len(row)
    return {"table": table, "counts": counts, "prompts_cut": sum(c["prompts_cut"] for c in counts.values())}


def format_results(results: dict, benches: list[str]) -> str:
    header = "metric".ljust(16) + "".join(b[:14].rjust(15) for b in [*benches, "avg"])
    lines = [header]
    for metric, row in results["table"].items():
        lines.append(metric.ljust(16) + "".join(_fmt(row.get(b)).rjust(15) for b in [*benches, "avg"]))
    counts = ", ".join(f"{b}: {c['problems']} problems" for b, c in results["counts"].items())
    lines.append(f"({counts}; accuracy in %)")
    if results.get("prompts_cut"):
        lines.append(f"prompts cut to fit the policy's context: {results['prompts_cut']} (their beginnings dropped)")
    if results.get("tokens_per_second"):
        lines.append(f"generation: {results['tokens_per_second']:.1f} tokens/s")
    return "\n".join(lines)
