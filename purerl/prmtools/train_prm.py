"""``purerl train-prm``: a 2-label token-classification PRM from step-labelled data, in PURE's two stages.

Each example is the prompt, then ``step + separator`` for every step (the layout
:class:`purerl.prm.token_classification.TokenClassificationPRM` scores); the label (1 correct, 0 wrong)
sits on each step's separator token, every other token is ignored (-100). Stage 1 trains the head alone
(new where the checkpoint had none), stage 2 all weights (or LoRA adapters and the head). Examples
longer than ``max_length`` are cut after the last step that fits and counted; one whose prompt and
first step do not fit is left out and counted. Held-out step accuracy and the F1 of wrong steps every
``eval_every`` steps; metrics in ``metrics.jsonl`` (and TensorBoard); verified atomic checkpoints
(:mod:`purerl.training.checkpoint`) and ``--resume``; ``final/`` loads with ``prm.kind=token_classification``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shlex
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from purerl.io.files import write_atomic
from purerl.io.logger import read_rows, truncate_rows
from purerl.models.prm_stages import head_module
from purerl.models.warmstart import cosine_schedule, pad_batch
from purerl.prm.token_classification import build_prm_inputs
from purerl.prmtools.stepdata import StepExample, load_step_examples
from purerl.prmtools.train_prm_config import StageConfig, TrainPRMConfig, load_train_prm_config
from purerl.training import checkpoint as ckpt
from purerl.training.integrity import RESTORE_ERRORS, first_line, read_saved_config
from purerl.training.run_control import RunStopped, StopSignals, claim_run_folder

log = logging.getLogger(__name__)

FREE_ON_RESUME = ("max_steps", "eval_every", "checkpoint_every", "keep_checkpoints", "threads", "tensorboard")
STATE_SCHEMA = {"step": int, "stage": str, "optimizer": dict, "scheduler": dict, "rng": dict}
"""The keys of train-prm's ``trainer_state.pt`` and their types (:meth:`PRMTrainer.save`)."""


def encode(tokenizer, examples: list[StepExample], cfg: TrainPRMConfig, max_length: int):
    """``(encoded, counts)``: ``(ids, labels)`` per example that fits, labels on separator tokens."""
    out, counts = [], {"examples": len(examples), "cut": 0, "left_out": 0}
    for ex in examples:
        ids, markers, _ = build_prm_inputs(tokenizer, ex.prompt, ex.steps, cfg.separator)
        keep = len(markers)
        if len(ids) > max_length:
            keep = sum(m < max_length for m in markers)
            if keep == 0 or cfg.last_step_only:  # nothing fits, or the labelled last step would be cut
                counts["left_out"] += 1
                continue
            counts["cut"] += 1
            ids = ids[: markers[keep - 1] + 1]
        labels = [-100] * len(ids)
        for k in range(keep):
            if not cfg.last_step_only or k == len(markers) - 1:
                labels[markers[k]] = int(ex.labels[k])
        out.append((ids, labels))
    return out, counts


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    ids, mask = pad_batch([r[0] for r in rows], pad_id)
    labels = torch.full_like(ids, -100)
    for i, (_, row) in enumerate(rows):
        labels[i, : len(row)] = torch.tensor(row)
    return ids, mask, labels


@torch.no_grad()
def evaluate(model, encoded, pad_id: int, batch_size: int) -> dict[str, float]:
    """Held-out loss, step accuracy (argmax at each labelled token) and the F1 of wrong steps."""
    model.eval()
    tp = fp = fn = right = total = 0
    loss_sum = 0.0
    for start in range(0, len(encoded), batch_size):
        ids, mask, labels = collate(encoded[start : start + batch_size], pad_id)
        dev = model.device
        out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev))
        at = labels != -100
        pred = out.logits.argmax(-1).cpu()[at]
        gold = labels[at]
        loss_sum += out.loss.item() * int(at.sum())
        right, total = right + int((pred == gold).sum()), total + int(at.sum())
        tp += int(((pred == 0) & (gold == 0)).sum())
        fp += int(((pred == 0) & (gold == 1)).sum())
        fn += int(((pred == 1) & (gold == 0)).sum())
    model.train()
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"eval/loss": loss_sum / max(1, total), "eval/step_accuracy": right / max(1, total),
            "eval/wrong_precision": precision, "eval/wrong_recall": recall, "eval/wrong_f1": f1,
            "eval/steps": float(total)}  # fmt: skip


class PRMTrainer:
    """The two-stage loop over one flat sequence of optimizer steps (stage 1's, then stage 2's)."""

    def __init__(self, cfg: TrainPRMConfig, resume: bool = False, overwrite: bool = False):
        from purerl.config.validation import check_device, check_model_path

        check_device("device", cfg.device)
        if cfg.model != "builtin":
            check_model_path("model", cfg.model)
        self.cfg, self.out = cfg, Path(cfg.out_dir)
        claim_run_folder(self.out, resume, overwrite, key="out_dir")
        found = self._check_resume() if resume else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.train_examples, self.heldout_examples, self.skipped = self._data()
        self.model, self.tokenizer = self._model()
        limit = cfg.max_length or getattr(self.model.config, "max_position_embeddings", 0) or 10**9
        self.train_set, self.train_counts = encode(self.tokenizer, self.train_examples, cfg, limit)
        self.heldout_set, self.heldout_counts = encode(self.tokenizer, self.heldout_examples, cfg, limit)
        if not self.train_set:
            raise ValueError(f"{cfg.data.path}: no training example fits (counts: {self.train_counts})")
        n = len(self.train_set)
        self.plan = [("head", cfg.head, math.ceil(cfg.head.epochs * n / cfg.batch_size)),
                     ("full", cfg.full, math.ceil(cfg.full.epochs * n / cfg.batch_size))]  # fmt: skip
        self.total = sum(steps for _, _, steps in self.plan)
        self.step, self.stage, self.history, self.saved, self.signals = 0, None, [], None, None
        self._order_key, self._order_cache = None, []
        self.out.mkdir(parents=True, exist_ok=True)
        if found is not None:
            self._restore(found.folder)
        write_atomic(self.out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        self._truncate_log()
        self.tb = self._tensorboard()

    # ------------------------------------------------------------------------------------ set-up

    def _data(self):
        cfg = self.cfg
        train = load_step_examples(cfg.data)
        skipped = {f"train: {k}": v for k, v in train.skipped.items()}
        if cfg.heldout.path:
            held = load_step_examples(cfg.heldout)
            skipped.update({f"heldout: {k}": v for k, v in held.skipped.items()})
            return train.examples, held.examples, skipped
        examples = list(train.examples)
        random.Random(f"heldout-{cfg.seed}").shuffle(examples)
        k = int(len(examples) * cfg.heldout_fraction)
        return examples[k:], examples[:k], skipped

    def _model(self):
        from purerl.models.loading import load_prm_model

        path = self.cfg.model
        if path == "builtin":
            from purerl.config import load_config
            from purerl.models.builtin import builtin_policy_path

            path = str(builtin_policy_path(load_config(None)))
        torch.manual_seed(self.cfg.seed)  # the new head's initial weights
        labels = {"id2label": {0: "wrong", 1: "correct"}, "label2id": {"wrong": 0, "correct": 1}}
        model, tokenizer = load_prm_model(path, dtype=self.cfg.dtype, device=self.cfg.device, num_labels=2, **labels)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # ------------------------------------------------------------------------------------ stages

    def _stage_at(self, step: int) -> tuple[str, StageConfig, int, int]:
        """``(name, settings, steps, first step)`` of the stage that optimizer step ``step`` belongs to."""
        first = 0
        for name, stage, steps in self.plan:
            if step < first + steps:
                return name, stage, steps, first
            first += steps
        raise IndexError(step)

    def _enter(self, name: str, stage: StageConfig, steps: int) -> None:
        """Trainable parameters, optimizer and schedule of a stage."""
        cfg = self.cfg
        if name == "full" and cfg.lora_rank and not hasattr(self.model, "peft_config"):
            from peft import LoraConfig, TaskType, get_peft_model

            head, _ = head_module(self.model)
            self.model = get_peft_model(self.model, LoraConfig(task_type=TaskType.TOKEN_CLS, r=cfg.lora_rank,
                                        lora_alpha=cfg.lora_alpha, target_modules="all-linear",
                                        modules_to_save=[head]))  # fmt: skip
        if name == "head":
            for p in self.model.parameters():
                p.requires_grad_(False)
            params = list(head_module(self.model)[1].parameters())
            for p in params:
                p.requires_grad_(True)
        elif not cfg.lora_rank:
            params = list(self.model.parameters())
            for p in params:
                p.requires_grad_(True)
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        self.scheduler = cosine_schedule(self.optimizer, steps, stage.warmup)
        self.params, self.stage = params, name

    def _order(self, name: str, epoch: int) -> list[int]:
        """The seeded order of one pass over the examples in a stage (the last one drawn is kept)."""
        if self._order_key != (name, epoch):
            order = list(range(len(self.train_set)))
            random.Random(f"{self.cfg.seed}-{name}-{epoch}").shuffle(order)
            self._order_key, self._order_cache = (name, epoch), order
        return self._order_cache

    def _batch(self, name: str, k: int):
        """The ``k``-th batch of a stage: passes over the examples, each in its own seeded order."""
        n, bs = len(self.train_set), self.cfg.batch_size
        rows = [self.train_set[self._order(name, p // n)[p % n]] for p in range(k * bs, (k + 1) * bs)]
        return collate(rows, self.tokenizer.pad_token_id)

    # -------------------------------------------------------------------------------------- loop

    def train(self) -> dict:
        from tqdm import tqdm

        end = min(self.total, self.cfg.max_steps) if self.cfg.max_steps else self.total
        bar = tqdm(total=self.total, initial=self.step, desc="purerl train-prm", dynamic_ncols=True)
        self.model.train()
        with StopSignals() as signals:
            self.signals = signals
            while self.step < end:
                if signals.received:
                    saved = self.save() if self.step and self.saved_step() != self.step else self.saved
                    raise signals.stopped(self.step, saved)
                row = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3g}", stage=row["stage"])
                if self.step % self.cfg.eval_every == 0 or self.step == self.total:
                    row.update(self._evaluate())
                self._log(row)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == end:
                    self.save()
        bar.close()
        if self.step < self.total:
            return {"stopped_at": self.step}
        return self.finish()

    def train_step(self) -> dict:
        name, stage, steps, first = self._stage_at(self.step)
        if self.stage != name:
            self._enter(name, stage, steps)
        ids, mask, labels = self._batch(name, self.step - first)
        dev = self.model.device
        loss = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        if not torch.isfinite(loss):
            raise RunStopped(f"non-finite loss at step {self.step + 1}; last checkpoint: {self.saved or 'none'}", 4)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "stage": name, "loss": loss.item(), "lr": self.scheduler.get_last_lr()[0]}

    def _evaluate(self) -> dict:
        if not self.heldout_set:
            return {}
        return evaluate(self.model, self.heldout_set, self.tokenizer.pad_token_id, self.cfg.batch_size)

    def _log(self, row: dict) -> None:
        row["time"] = time.time()
        self.history.append(row)
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    # ------------------------------------------------------------------------------- checkpoints

    def saved_step(self) -> int:
        return -1 if self.saved is None else int(self.saved.name[len(ckpt.PREFIX) :])

    def save(self) -> Path:
        state = {"step": self.step, "stage": self.stage, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_states()}  # fmt: skip
        config = (self.out / "config.yaml").read_text(encoding="utf-8")
        with self.signals.critical() if self.signals else nullcontext():  # a second signal waits for the save
            self.saved = ckpt.save_checkpoint(ckpt.step_folder(self.out, self.step), self.model, self.tokenizer, state,
                                          config, flags=[])  # fmt: skip
        ckpt.prune(self.out, self.cfg.keep_checkpoints)
        return self.saved

    def _check_resume(self) -> ckpt.Found:
        found = ckpt.newest(self.out)
        self.resume_state = ckpt.load_state(found.folder, STATE_SCHEMA)  # checked before the model loads
        if (self.out / "metrics.jsonl").exists():
            read_rows(self.out / "metrics.jsonl")  # and so is its log
        saved = read_saved_config(found.folder)
        now = dataclasses.asdict(self.cfg)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in FREE_ON_RESUME)
        if changed:
            raise ValueError(f"--resume with changed settings ({', '.join(changed)}); only {', '.join(FREE_ON_RESUME)} "
                             "may change")  # fmt: skip
        return found

    def _restore(self, folder: Path) -> None:
        state = self.__dict__.pop("resume_state")
        plan = {nm: (s, n) for nm, s, n in self.plan}
        if state["stage"] not in plan:
            raise ValueError(f"{folder / ckpt.STATE_FILE}: stage {state['stage']!r} is not one of {list(plan)}")
        self._enter(state["stage"], *plan[state["stage"]])  # the stage whose optimizer the checkpoint holds
        ckpt.load_weights(self.model, folder, adapter=hasattr(self.model, "peft_config"))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_states(state["rng"])
        except RESTORE_ERRORS as err:
            raise ValueError(f"{folder / ckpt.STATE_FILE}: does not fit this run ({first_line(err)})") from None
        self.step, self.saved = state["step"], folder
        log.info("resumed from %s at step %d", folder, self.step)

    def _truncate_log(self) -> None:
        self.history = truncate_rows(self.out / "metrics.jsonl", self.step)[0]

    def finish(self) -> dict:
        """``final/``: the trained PRM (LoRA merged), loadable by ``prm.kind=token_classification``."""
        model = self.model.merge_and_unload() if hasattr(self.model, "peft_config") else self.model
        final = ckpt.save_final(self.out / "final", model, self.tokenizer)
        last = self.history[-1] if self.history else {}
        result = {"final": str(final), "separator": self.cfg.separator, "steps": self.step,
                  "train": self.train_counts, "heldout": self.heldout_counts, "skipped": self.skipped,
                  **{k: v for k, v in last.items() if k.startswith("eval/")}}  # fmt: skip
        write_atomic(final / "purerl_prm.json", json.dumps(result, indent=1))
        if self.tb is not None:
            self.tb.close()
        return result


def run_train_prm(config: str | None, overrides: list[str], resume: bool = False, overwrite: bool = False) -> str:
    """``purerl train-prm``: train, and a summary of the result."""
    cfg = load_train_prm_config(config, overrides)
    trainer = PRMTrainer(cfg, resume=resume, overwrite=overwrite)
    result = trainer.train()
    if "stopped_at" in result:
        return f"stopped after step {result['stopped_at']} of {trainer.total} (max_steps); continue with --resume"
    lines = [f"PRM: {result['final']} ({result['steps']} steps; train {result['train']}, heldout {result['heldout']})"]
    lines += [f"  {k}: {v:.4f}" for k, v in result.items() if k.startswith("eval/") and k != "eval/steps"]
    if result["skipped"]:
        lines.append(f"  skipped rows: {result['skipped']}")
    separator = "" if cfg.separator == "\n" else " prm.separator=" + shlex.quote(json.dumps(cfg.separator))
    lines.append(f"use it: purerl train prm.kind=token_classification prm.path={result['final']}{separator}")
    return "\n".join(lines)
