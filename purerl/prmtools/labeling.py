"""`purerl label-steps`: step labels the Math-Shepherd way (Wang et al., 2024), for any policy.

For each step prefix ``steps[:j+1]`` of a solution the policy continues ``prompt + prefix + separator``
``k`` times; ``prefix + separator + completion`` is graded against the gold answer (:func:`purerl.grading.grade`).
A step is correct if any completion reaches the answer (``hard``), or by the share that do (``soft``).
The last step is the whole solution: it is labelled by grading the solution itself, with no sampling.

- **Stop at the first error** (unless ``args.stop_at_first_error`` is False): once no completion of a
  prefix reaches the answer, the later steps are labelled wrong unsampled (``shares`` null), and the
  completions not generated are reported. The last step is still graded (free and exact).
- **Batching**: each (prefix, completion) request, and each solution sampled when ``--responses`` is
  not given, is one row of a generate call of up to ``--batch-size`` rows. Solutions enter a pool in
  file order as batches need rows; with stop-at-first-error a solution offers one prefix at a time
  (step j+1 once step j's k completions are graded), so a batch mixes step positions of several solutions.
- **Seeding**: each row samples from its own stream, seeded by ``(seed, row, solution, step, c)``:
  greedy decoding of ``logits / temperature + Gumbel noise`` from that stream (the Gumbel-max trick,
  an exact sample). A label thus does not depend on its batch, and a resumed run samples as an
  uninterrupted one would.
- **Resume**: a finished solution's row is appended (and synced) to ``--out`` at once (so rows come in
  the order solutions finish), each request's result to ``<out>.partial.jsonl`` after its batch
  (deleted at the end unless it holds results of solutions the run did not reach); a rerun skips the
  (row, solution) pairs in ``--out`` and reuses the partial results: a crash loses at most the batch in
  flight. A cut last line is dropped with a warning. ``<out>.config.json`` keeps the settings; a rerun
  with others is refused.

Rows: ``prompt`` (the question), ``completions`` (the steps), ``labels`` (bools; soft: floats),
``shares`` (share of completions correct; 1 / 0 for the last step; null where unsampled), ``row``
(source row), ``solution`` (index within the row), ``gold`` (the gold answers).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from purerl.grading import grade
from purerl.io.data import DataConfig, examples_from_rows, kind, read_rows
from purerl.io.files import read_jsonl
from purerl.pipeline.steps import split_steps
from purerl.rollout.seeded import SeededGenerate, stream_seed
from purerl.tasks.prompts import TEMPLATES, format_prompt

log = logging.getLogger(__name__)

SETTINGS = ("file", "policy", "dtype", "question", "gold", "responses", "separator", "k", "mode", "template",
            "max_new_tokens", "temperature", "seed", "stop_at_first_error")  # fmt: skip
"""What ``<out>.config.json`` keeps and a rerun must match. ``solutions``, ``limit`` and ``batch_size``
only choose which solutions are labelled or how they are batched, not their labels."""


def _stop(args) -> bool:
    return getattr(args, "stop_at_first_error", True)


def check_args(args) -> None:
    """Raise a one-line ``ValueError`` naming the flag of the first setting that cannot work; loads nothing."""
    from purerl.config.validation import check_device, check_model_path

    at_least = {"--k": (args.k, 1), "--solutions": (args.solutions, 1), "--batch-size": (args.batch_size, 1),
                "--max-new-tokens": (args.max_new_tokens, 1), "--limit": (args.limit, 1),
                "--threads": (args.threads, 0)}  # fmt: skip
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    if args.template not in TEMPLATES:
        raise ValueError(f"--template {args.template!r}: choose one of {', '.join(TEMPLATES)}")
    if not args.separator:
        raise ValueError("--separator must not be empty")
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: a folder; give the stepwise JSONL file to write")
    if not args.file.startswith("hf:") and not Path(args.file).exists():
        raise ValueError(f"{args.file}: no such file or folder")
    check_device("--device", args.device)
    if args.policy == "builtin" or args.policy.startswith("builtin:"):
        config = args.policy.partition(":")[2]
        if config and not Path(config).is_file():
            raise ValueError(f"--policy {args.policy!r}: no config file {config}")
    else:
        check_model_path("--policy", args.policy)


def policy_folder(spec: str) -> str:
    """The policy a ``--policy`` names: ``builtin`` (``builtin:CONFIG.yaml``) is the built-in task's warm
    start of the default (that) config, trained once and cached; anything else is passed on as is."""
    if spec != "builtin" and not spec.startswith("builtin:"):
        return spec
    from purerl.config import load_config
    from purerl.models.builtin import builtin_policy_path

    return builtin_policy_path(load_config(spec.partition(":")[2] or None))


def settings_of(args) -> dict:
    """The :data:`SETTINGS` of a run, local paths made absolute."""
    out = {key: getattr(args, key, None) for key in SETTINGS}
    out["stop_at_first_error"] = _stop(args)
    if not args.file.startswith("hf:"):
        out["file"] = str(Path(args.file).resolve())
    head, _, config = args.policy.partition(":")
    if head == "builtin" and config:
        out["policy"] = f"builtin:{Path(config).resolve()}"
    elif Path(args.policy).expanduser().exists():
        out["policy"] = str(Path(args.policy).expanduser().resolve())
    return json.loads(json.dumps(out))


def side_paths(out: str | Path) -> tuple[Path, Path]:
    """``(<out>.config.json, <out>.partial.jsonl)``."""
    return Path(f"{out}.config.json"), Path(f"{out}.partial.jsonl")


def check_resume(args, settings: dict) -> None:
    """Refuse (one line) an ``--out`` written with other settings, or not by label-steps; else write the
    sidecar ``<out>.config.json`` when missing."""
    config, partial = side_paths(args.out)
    advice = "use another --out, or delete it to start over"
    if not any(p.is_file() and p.stat().st_size for p in (Path(args.out), partial)):  # nothing labelled yet
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        return
    if not config.is_file():
        raise ValueError(f"--out {args.out} exists but {config.name} does not: not written by label-steps "
                         f"(or its settings are lost); {advice}")  # fmt: skip
    try:
        old = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict):
        raise ValueError(f"{config}: not a JSON object, so --out {args.out} cannot be checked; {advice}")
    changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
    if changed:
        raise ValueError(f"--out {args.out} was written with other settings ({'; '.join(changed)}); {advice}")


def read_records(path: Path, keys: tuple[str, ...] = ("row", "solution")) -> list[dict]:
    """The JSON objects of a JSONL file this module appends to (none if missing), each with int ``keys``
    (:func:`purerl.io.files.read_jsonl`): a cut last line (a crash mid-write) is dropped with a warning
    and cut off the file, so that appends stay whole; any other bad line is an error naming it."""

    def bad(row: object) -> str | None:
        if isinstance(row, dict) and all(isinstance(row.get(key), int) for key in keys):
            return None
        return f"not a label-steps record (an object with int {', '.join(keys)})"

    return read_jsonl(path, bad, repair=True)


@dataclass(eq=False)
class Solution:
    """One solution being labelled: its steps (None until sampled) and, per step but the last, how many
    of its completions were graded (``done``) and reached the gold answer (``correct``)."""

    row: int
    index: int
    question: str
    gold: list[str]
    prompt: str = ""
    steps: list[str] | None = None
    done: list[int] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    asked: list[bool] = field(default_factory=list)
    final: bool = False

    def set_text(self, text: str, separator: str) -> None:
        self.steps = [s.text for s in split_steps(text, separator)]
        n = len(self.steps)
        self.done, self.correct, self.asked = [0] * n, [0] * n, [False] * n


@dataclass
class Cost:
    completions: int = 0
    sampled: int = 0
    tokens: int = 0
    saved: int = 0
    reused: int = 0
    cut: int = 0
    seconds: float = 0.0


def load_solutions(args, done: set[tuple[int, int]]) -> tuple[list[Solution], Counter[str]]:
    """The solutions to label, in file order, without the ``done`` (row, solution) pairs; and the skips."""
    rows = read_rows(args.file)[: args.limit]
    cfg = DataConfig(path=args.file, question=list(args.question), answer=list(args.gold), ref_answer=[])
    skipped: Counter[str] = Counter()
    out = []
    for ex, row in zip(examples_from_rows(rows, cfg), rows):
        if not ex.answer:
            skipped["rows without a gold answer"] += 1
            continue
        texts: list[str | None] = [None] * args.solutions
        if args.responses:
            value = row.get(args.responses)
            if value is None:
                skipped[f"rows without {args.responses!r}"] += 1
                continue
            texts = value if isinstance(value, list) else [value]
            bad = [t for t in texts if not isinstance(t, str)]
            if bad:
                raise ValueError(f"{args.file} row {ex.row}: field {args.responses!r} holds {kind(bad[0])}; "
                                 "expected a solution string or a list of them")  # fmt: skip
        for s, text in enumerate(texts):
            if (ex.row, s) in done:
                continue
            sol = Solution(ex.row, s, ex.question, ex.answer)
            if text is not None:
                sol.set_text(text, args.separator)
            out.append(sol)
    return out, skipped


def _append(f, records: list[dict]) -> None:
    f.write("".join(json.dumps(r) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


class Labeler:
    """Labels solutions (module docstring): a queue of generate requests ``(solution, step, c)``, step
    -1 meaning "sample the solution itself", fed from a pool of solutions in file order."""

    def __init__(self, args, model, tokenizer, cache: dict, out_file, partial_file, bar):
        self.args, self.k, self.sep, self.stop = args, args.k, args.separator, _stop(args)
        self.model, self.tokenizer, self.cache = model, tokenizer, cache
        self.out_file, self.partial_file, self.bar = out_file, partial_file, bar
        self.units: deque[tuple[Solution, int, int]] = deque()
        self.cost, self.labels, self.empty = Cost(), [], 0

    def run(self, solutions: list[Solution]) -> None:
        queue = deque(solutions)
        while queue or self.units:
            while queue and len(self.units) < self.args.batch_size:
                self.advance(queue.popleft())
            batch = [self.units.popleft() for _ in range(min(self.args.batch_size, len(self.units)))]
            if batch:
                self.generate(batch)

    def prefix(self, sol: Solution, j: int) -> str:
        return self.sep.join(sol.steps[: j + 1]) + self.sep

    def ask(self, sol: Solution, j: int) -> None:
        """Queue step ``j``'s k completions, or take them from the partial file of an earlier run."""
        sol.asked[j] = True
        for c in range(self.k):
            rec = self.cache.pop((sol.row, sol.index, j, c), None)
            if rec is None:
                self.units.append((sol, j, c))
            else:
                sol.done[j], sol.correct[j] = sol.done[j] + 1, sol.correct[j] + bool(rec.get("correct"))
                self.cost.reused += 1

    def advance(self, sol: Solution) -> None:
        """Queue what ``sol`` needs next; write it once its labels are final."""
        if sol.final:
            return
        if sol.steps is None:
            rec = self.cache.pop((sol.row, sol.index, -1, 0), None)
            if rec is None:
                self.units.append((sol, -1, 0))
                return
            sol.set_text(str(rec.get("text", "")), self.sep)
            self.cost.reused += 1
        for j in range(len(sol.steps) - 1):
            if not sol.asked[j]:
                self.ask(sol, j)
            if sol.done[j] < self.k and self.stop:
                return  # step j+1 waits for step j's verdict
            if self.stop and sol.correct[j] == 0:
                break  # the first error: the later steps are wrong, unsampled
        if all(d == self.k for a, d in zip(sol.asked, sol.done) if a):
            self.finish(sol)

    def generate(self, batch: list[tuple[Solution, int, int]]) -> None:
        """One generate call for ``batch``; record and grade its results, then move its solutions on."""
        from purerl.rollout import sample_answers

        a = self.args
        seeds = [stream_seed(a.seed, sol.row, sol.index, j, c) for sol, j, c in batch]
        prompts = [sol.prompt + (self.prefix(sol, j) if j >= 0 else "") for sol, j, _ in batch]
        backend = SeededGenerate(self.model, self.tokenizer, seeds)
        answers = sample_answers(backend, prompts, max_new_tokens=a.max_new_tokens, temperature=a.temperature)
        tokens = answers.rollout.response_mask.sum(-1).tolist()
        self.cost.cut += answers.rollout.cut_prompts
        records = []
        for (sol, j, c), text, n in zip(batch, answers.texts, tokens):
            rec = {"row": sol.row, "solution": sol.index, "step": j, "c": c, "tokens": int(n)}
            if j < 0:
                rec["text"] = text
                sol.set_text(text, self.sep)
                self.cost.sampled += 1
            else:
                rec["correct"] = grade(self.prefix(sol, j) + text, sol.gold) is True
                sol.done[j], sol.correct[j] = sol.done[j] + 1, sol.correct[j] + rec["correct"]
                self.cost.completions += 1
            self.cost.tokens += int(n)
            records.append(rec)
        _append(self.partial_file, records)
        for sol in dict.fromkeys(sol for sol, _, _ in batch):
            self.advance(sol)

    def finish(self, sol: Solution) -> None:
        """Label ``sol`` (its last step by grading the whole solution) and append its row."""
        sol.final = True
        self.bar.update(1)
        if not sol.steps:
            self.empty += 1
            return
        shares = [sol.correct[j] / self.k if sol.asked[j] else None for j in range(len(sol.steps) - 1)]
        shares.append(1.0 if grade(self.sep.join(sol.steps), sol.gold) is True else 0.0)
        self.cost.saved += self.k * sum(not asked for asked in sol.asked[:-1])
        if self.args.mode == "hard":
            labels = [share is not None and share > 0 for share in shares]
        else:
            labels = [share or 0.0 for share in shares]
        row = {"prompt": sol.question, "completions": sol.steps, "labels": labels, "shares": shares,
               "row": sol.row, "solution": sol.index, "gold": sol.gold}  # fmt: skip
        _append(self.out_file, [row])
        self.labels.append(labels)


def summary(args, lab: Labeler, done: int, skipped: Counter) -> str:
    """What was labelled, how the labels came out and what it cost."""
    labels = [x for row in lab.labels for x in row]
    mean = sum(float(x) for x in labels) / max(len(labels), 1)
    what = "share of steps labelled correct" if args.mode == "hard" else "mean step label (share correct)"
    lines = [f"labelled {len(lab.labels)} solutions, {len(labels)} steps -> {args.out}; {what}: {mean:.3f}"]
    if lab.empty:
        skipped["solutions without a step"] += lab.empty
    if done or skipped:
        parts = [f"{done} solutions already in --out"] * bool(done) + [f"{n} {why}" for why, n in skipped.items()]
        lines.append(f"skipped: {', '.join(parts)}")
    c = lab.cost
    reused = f"; {c.reused} requests reused from an interrupted run" if c.reused else ""
    lines.append(f"cost: {c.completions} completions and {c.sampled} solutions sampled, {c.tokens} tokens, "
                 f"{c.seconds:.1f} s{reused}")  # fmt: skip
    if _stop(args):
        lines.append(f"stop-at-first-error: {c.saved} completions not needed")
    if c.cut:
        lines.append(f"warning: {c.cut} prompts were longer than the policy's context and were cut from the left")
    return "\n".join(lines)


def run_label_steps(args) -> str:
    """Check the arguments, label the solutions of ``args.file`` into ``args.out``; the summary."""
    check_args(args)
    check_resume(args, settings_of(args))
    out, partial = Path(args.out), side_paths(args.out)[1]
    done = {(r["row"], r["solution"]) for r in read_records(out)}
    records = read_records(partial, ("row", "solution", "step", "c"))
    cache = {(r["row"], r["solution"], r["step"], r["c"]): r for r in records if (r["row"], r["solution"]) not in done}
    solutions, skipped = load_solutions(args, done)

    import torch
    from tqdm import tqdm

    from purerl.models.loading import load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_policy(policy_folder(args.policy), dtype=args.dtype, device=args.device)
    prompts: dict[str, str] = {}
    for sol in solutions:
        sol.prompt = prompts.setdefault(sol.question, format_prompt(sol.question, args.template, tokenizer))
    start = time.time()
    with out.open("a", encoding="utf-8") as out_file, partial.open("a", encoding="utf-8") as partial_file, \
            tqdm(total=len(solutions), desc="label-steps", unit="solution") as bar:  # fmt: skip
        lab = Labeler(args, model.eval(), tokenizer, cache, out_file, partial_file, bar)
        lab.run(solutions)
    lab.cost.seconds = time.time() - start
    if lab.cache:  # results of solutions this run did not reach (another --limit): kept for a later run
        with partial.open("w", encoding="utf-8") as f:
            _append(f, list(lab.cache.values()))
    else:
        partial.unlink(missing_ok=True)
    return summary(args, lab, len(done), skipped)
