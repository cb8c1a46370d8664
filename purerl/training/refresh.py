"""The online PRM refresh of ``purerl train`` (``refresh.*``, docs/refresh.md): the PRM learns during RL
from the outcome grades the pipeline already computed for the policy's own answers.

Each RL step, the graded answers of the chosen prompts (``refresh.labels``: ``vr``, those whose grade is a
verifiable reward; ``all``, every prompt with a gold answer) enter a replay buffer of the newest
``refresh.buffer``; then ``refresh.updates`` AdamW steps train the PRM on minibatches drawn from it with
:func:`purerl.algo.prm_refresh.refresh_loss`: a wrong answer's lowest blamable step towards wrong (the
steps from where it leaves every right answer to the same prompt on, :func:`blamable_steps`), a right
answer's steps towards correct, and with ``refresh.anchor`` the other steps of wrong answers held to the
PRM as it was. No step label comes from outside and no second grading pass runs: an answer without a
final answer counts as wrong, as its verifiable reward does. The PRM adapter's model is trained in place,
so the next step's scores come from the refreshed PRM. Its state (weights, optimizer, buffer, sampling
RNG) goes into every checkpoint and comes back on resume and roll-back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import time
from pathlib import Path

import torch

from purerl.algo.prm_refresh import blamable_steps, ordered_pairs, pairwise_refresh_loss, refresh_loss

log = logging.getLogger(__name__)


class PRMRefresher:
    """Trains a model PRM adapter (``prm.model``, with ``step_log_odds``) from graded answers."""

    def __init__(self, cfg, prm, seed: int):
        if not hasattr(prm, "step_log_odds"):
            raise ValueError(f"refresh.enabled=true: the {type(prm).__name__} PRM has no weights to train")
        self.cfg = cfg
        self.prm = prm
        if cfg.lora_rank > 0:
            prm.model = _with_lora(prm.model, cfg.lora_rank, cfg.lora_alpha)
        self.names = [n for n, p in prm.model.named_parameters() if p.requires_grad]
        self.params = [p for p in prm.model.parameters() if p.requires_grad]
        # the PRM as it was, for the anchor's targets: the base with LoRA, else a frozen copy
        self.frozen = None if cfg.lora_rank > 0 or cfg.anchor == 0 else copy.deepcopy(prm.model).eval()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.buffer: list[dict] = []
        self.rng = random.Random(f"refresh-{seed}")
        self.updates = 0
        # refresh.gate: the PRM last kept (weights and optimizer), which an update must not rank worse than,
        # and with gate=start the PRM the run started with as well
        gated = cfg.gate != "none"
        self.kept = copy.deepcopy(prm.model).eval() if gated else None
        self.kept_optimizer = copy.deepcopy(self.optimizer.state_dict()) if gated else None
        self.start = None  # the PRM the run started with: the anchor's frozen copy where there is one
        if cfg.gate == "start":
            self.start = self.frozen if self.frozen is not None else copy.deepcopy(prm.model).eval()
        self.start_optimizer = copy.deepcopy(self.optimizer.state_dict()) if cfg.gate == "start" else None
        self.gate_metrics: dict[str, float] = {}
        self.rejected = 0

    def observe(self, prompts: list[str], steps: list[list[str]], correct: list, learn: list[bool]) -> int:
        """Add the answers ``learn`` picks (their grade: True right, anything else wrong) to the buffer;
        returns how many were added."""
        right = [grade is True for grade in correct]
        blame = blamable_steps(list(prompts), [list(r) for r in steps], [r and k for r, k in zip(right, learn)])
        rows = zip(prompts, steps, right, learn, blame)
        new = [{"prompt": p, "steps": list(r), "correct": ok, "blame": b} for p, r, ok, keep, b in rows if keep and r]
        if new and self.cfg.anchor > 0:
            for item, z in zip(new, self._earlier_log_odds(new)):
                item["anchor"] = z
        if new and self.kept is not None:
            self._gate(new)
        self.buffer.extend(new)
        del self.buffer[: max(0, len(self.buffer) - self.cfg.buffer)]
        return len(new)

    @torch.no_grad()
    def _gate(self, items: list[dict]) -> None:
        """``refresh.gate``: on answers no PRM has trained on yet, keep the current PRM if its min-form values
        order the (right, wrong) pairs to one prompt at least as well as the kept PRM's (and, with ``start``,
        the starting PRM's), else go back to the better of those; no pair, no decision."""
        prompts, correct = [i["prompt"] for i in items], [i["correct"] for i in items]
        now = ordered_pairs(self._values(items, self.prm.model), correct, prompts)
        self.gate_metrics = {"refresh/gate_pairs": float(now[0])}
        if now[0] == 0:
            return
        refs = [(ordered_pairs(self._values(items, self.kept), correct, prompts)[1], self.kept, self.kept_optimizer)]
        if self.start is not None:
            refs.append((ordered_pairs(self._values(items, self.start), correct, prompts)[1], self.start,
                         self.start_optimizer))  # fmt: skip
        self.gate_metrics.update({"refresh/gate_now": now[1] / now[0], "refresh/gate_kept": refs[0][0] / now[0]})
        if self.start is not None:
            self.gate_metrics["refresh/gate_start"] = refs[1][0] / now[0]
        best, model, optimizer = max(refs, key=lambda r: r[0])  # the kept PRM on a tie
        current, kept = dict(self.prm.model.named_parameters()), dict(self.kept.named_parameters())
        if now[1] < best:  # worse: back to the better reference, which becomes the kept PRM
            source = dict(model.named_parameters())
            for name in self.names:
                current[name].copy_(source[name])
                kept[name].copy_(source[name])
            self.optimizer.load_state_dict(copy.deepcopy(optimizer))
            self.kept_optimizer = copy.deepcopy(optimizer)
            self.rejected += 1
        else:
            for name in self.names:
                kept[name].copy_(current[name])
            self.kept_optimizer = copy.deepcopy(self.optimizer.state_dict())
        self.gate_metrics["refresh/rejected"] = float(self.rejected)

    def _log_odds_under(self, items: list[dict], model, context=None):
        """``(log_odds, step_mask)`` of ``items`` scored by the PRM with ``model`` in place of its own (inside
        ``context``, e.g. LoRA adapters off)."""
        live = self.prm.model
        try:
            self.prm.model = model
            with context or contextlib.nullcontext():
                return self.prm.step_log_odds([i["prompt"] for i in items], [i["steps"] for i in items])
        finally:
            self.prm.model = live

    def _values(self, items: list[dict], model) -> list[float]:
        """Each answer's min-form value (its lowest step log-odds) under ``model``."""
        z, mask = self._log_odds_under(items, model)
        return z.masked_fill(~mask.bool(), float("inf")).min(-1).values.tolist()

    @torch.no_grad()
    def _earlier_log_odds(self, items: list[dict]) -> list[list[float]]:
        """Each step's log-odds under the PRM as it was before the refresh (the anchor's targets): its frozen
        copy, or under LoRA the base with the adapters off."""
        if self.frozen is not None:
            z, mask = self._log_odds_under(items, self.frozen)
        else:
            z, mask = self._log_odds_under(items, self.prm.model, self.prm.model.disable_adapter())
        return [row[m].tolist() for row, m in zip(z, mask)]

    def update(self) -> dict[str, float]:
        """``refresh.updates`` optimizer steps on minibatches of the buffer (none until it holds a batch)."""
        if len(self.buffer) < self.cfg.batch_size:
            return {"refresh/buffer": float(len(self.buffer))}
        start, sums = time.perf_counter(), {}
        self.prm.model.train()
        for _ in range(self.cfg.updates):
            for key, value in self._step(self._draw()).items():
                sums[key] = sums.get(key, 0.0) + value
        self.prm.model.eval()
        self.updates += self.cfg.updates
        out = {f"refresh/{k}": v / self.cfg.updates for k, v in sums.items()}
        out.update({"refresh/buffer": float(len(self.buffer)), "refresh/updates": float(self.updates),
                    "refresh/seconds": time.perf_counter() - start, **self.gate_metrics})  # fmt: skip
        return out

    def _draw(self) -> list[dict]:
        """A minibatch of ``batch_size`` answers: drawn one by one, or (``pairwise``) whole prompt groups
        until the batch is full, so that right and wrong answers to one prompt meet."""
        if self.cfg.objective != "pairwise":
            return self.rng.sample(self.buffer, self.cfg.batch_size)
        groups: dict[str, list[dict]] = {}
        for item in self.buffer:
            groups.setdefault(item["prompt"], []).append(item)
        batch = []
        for prompt in self.rng.sample(sorted(groups), len(groups)):
            batch += groups[prompt]
            if len(batch) >= self.cfg.batch_size:
                break
        return batch[: max(self.cfg.batch_size, len(groups[prompt]))]

    def _step(self, batch: list[dict]) -> dict[str, float]:
        log_odds, mask = self.prm.step_log_odds([b["prompt"] for b in batch], [b["steps"] for b in batch])
        correct = torch.tensor([b["correct"] for b in batch], device=log_odds.device)
        if self.cfg.objective == "pairwise":
            index = {p: i for i, p in enumerate(dict.fromkeys(b["prompt"] for b in batch))}
            groups = torch.tensor([index[b["prompt"]] for b in batch], device=log_odds.device)
            loss, metrics = pairwise_refresh_loss(log_odds, mask, correct, groups)
            return self._apply(loss, correct, metrics)
        blame, earlier = torch.zeros_like(mask), torch.zeros_like(log_odds)
        for i, b in enumerate(batch):
            blame[i, : len(b["blame"])] = torch.tensor(b["blame"], dtype=torch.bool)
            if "anchor" in b:
                earlier[i, : len(b["anchor"])] = torch.tensor(b["anchor"], dtype=earlier.dtype)
        anchored = self.cfg.anchor > 0
        loss, metrics = refresh_loss(log_odds, mask, correct, self.cfg.positive_weight, blame,
                                     earlier if anchored else None, self.cfg.anchor, self.cfg.smoothing,
                                     self.cfg.blame, self.cfg.weighting)  # fmt: skip
        return self._apply(loss, correct, metrics)

    def _apply(self, loss: torch.Tensor, correct: torch.Tensor, metrics: dict) -> dict[str, float]:
        if not torch.isfinite(loss):
            raise ValueError(f"the PRM refresh's loss is not finite ({loss.item()})")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "grad_norm": float(grad_norm),
                "right_frac": float(correct.float().mean()), **{k: float(v) for k, v in metrics.items()}}  # fmt: skip

    def state_dict(self) -> dict:
        """Plain data and tensors (a checkpoint loads it with ``weights_only=True``)."""
        weights = dict(zip(self.names, (p.detach().clone() for p in self.params)))
        state = {"weights": weights, "optimizer": self.optimizer.state_dict(), "buffer": [dict(b) for b in self.buffer],
                 "rng": self.rng.getstate(), "updates": self.updates}  # fmt: skip
        if self.kept is not None:
            kept = dict(self.kept.named_parameters())
            state["gate"] = {"weights": {n: kept[n].detach().clone() for n in self.names},
                             "optimizer": self.kept_optimizer, "rejected": self.rejected}  # fmt: skip
        return state

    def load_state_dict(self, state: dict) -> None:
        if set(state["weights"]) != set(self.names):
            raise ValueError("the checkpoint's refreshed PRM has other weights than this run's PRM")
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(state["weights"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer = [dict(b) for b in state["buffer"]]
        self.rng.setstate(state["rng"])
        self.updates = int(state["updates"])
        if self.kept is not None:
            if "gate" not in state:
                raise ValueError("refresh.gate=true, but the checkpoint's refresh state was saved without the gate")
            kept = dict(self.kept.named_parameters())
            with torch.no_grad():
                for name in self.names:
                    kept[name].copy_(state["gate"]["weights"][name])
            self.kept_optimizer = copy.deepcopy(state["gate"]["optimizer"])
            self.rejected = int(state["gate"]["rejected"])

    def save(self, folder: Path, spec) -> Path:
        """The refreshed PRM as a ``from_pretrained`` folder (``<run>/final_prm``) with a ``purerl_prm.json``
        (``spec``: the run's ``prm`` config) that records where it came from and, for a token-classification
        PRM, the separator it reads its scores at (loading it with another ``prm.separator`` is refused, as
        for a ``train-prm`` folder)."""
        from purerl.training.checkpoint import save_final

        folder = save_final(Path(folder), self.merged_model(), self.prm.tokenizer)
        meta = {"refreshed_from": spec.path or "the built-in PRM", "kind": spec.kind, "updates": self.updates}
        if isinstance(getattr(self.prm, "separator", None), str):
            meta["separator"] = self.prm.separator
        (folder / "purerl_prm.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return folder

    def merged_model(self):
        """The PRM's model to save: LoRA merged into a copy, else the model itself."""
        if self.cfg.lora_rank > 0:
            return copy.deepcopy(self.prm.model).merge_and_unload()
        return self.prm.model


def _with_lora(model, rank: int, alpha: int):
    """``model`` with LoRA adapters on its attention projections (peft); a classification head stays
    trainable in full (peft's ``TOKEN_CLS`` task keeps ``score`` / ``classifier`` as modules to save)."""
    from peft import LoraConfig, get_peft_model

    token_cls = "ForTokenClassification" in type(model).__name__
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj",
                        "o_proj"], task_type="TOKEN_CLS" if token_cls else "CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, config)


def build_refresher(cfg, prm):
    """The refresher of a config (None when ``refresh.enabled`` is off or the run has no PRM)."""
    if not cfg.refresh.enabled or prm is None:
        return None
    log.warning("refresh.enabled=true: the online PRM refresh is experimental; on every PRM measured it made the "
                "run worse or left it hacked (docs/refresh.md); keep the default guards on")  # fmt: skip
    return PRMRefresher(cfg.refresh, prm, cfg.run.seed)
