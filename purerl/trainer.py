"""The PURE training loop: one call per phase, in the order of the paper.

sample K responses per prompt -> segment steps -> PRM step rewards + verifiable rewards -> credit
(min / soft_min / sum) -> old and reference log-probs -> PPO-clip update -> metrics, hacking monitors
-> logs, held-out evaluation, checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from purerl.builders import build_policy, build_prm, build_task
from purerl.checkpoint import load_checkpoint, save_checkpoint, set_rng_states
from purerl.config import TrainConfig, save_config
from purerl.credit import kl_penalty, masked_mean, pure_advantages, transform_step_rewards
from purerl.logger import RunLogger
from purerl.losses import ppo_clip_loss
from purerl.monitor import HackingMonitor, response_metrics, tensor_stats
from purerl.prompts import COT_SYSTEM, format_prompt
from purerl.rollout.hf import generate, sequence_logprobs
from purerl.steps import StepBatch, decode_with_offsets, segment_batch, split_steps

log = logging.getLogger(__name__)


def has_ground_truth(prompt: str, fraction: float) -> bool:
    """Whether a prompt carries ground truth for VR: a fixed share of prompts, chosen by hash."""
    digest = hashlib.sha256(("vr:" + prompt).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < fraction * 10_000


@dataclass
class Batch:
    """What one RL step knows about its samples."""

    problems: list
    prompts: list[str]
    group_ids: torch.Tensor
    rollout: object = None
    texts: list[str] = field(default_factory=list)
    steps: StepBatch | None = None
    correct: list[bool | None] = field(default_factory=list)
    step_scores: list[list[float]] | None = None


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.policy, self.tokenizer = build_policy(cfg)
        self.device = next(self.policy.parameters()).device
        self.lora = cfg.policy.lora_rank > 0
        self.reference = None
        if cfg.algo.kl_coef > 0 and not self.lora:  # with LoRA the reference is the base: adapter off
            self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.prm = build_prm(cfg, self.tokenizer) if cfg.algo.reward != "vr" else None
        # building a model may train and cache it (seeding torch itself): seed again, so that a run
        # is the same whether its models came from the cache or not
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.algo.lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / 5))
        self.data_rng = random.Random(f"data-{cfg.run.seed}")
        self.task = build_task(cfg)
        self.heldout = self.task.heldout
        self.monitor = HackingMonitor()
        self.step = 0
        self.history: list[dict] = []
        if resume:
            self._resume()
        save_config(cfg, self.out / "config.yaml")
        self.logger = RunLogger(self.out, cfg, start_step=self.step)

    # ---------------------------------------------------------------------------------------- loop

    def train(self) -> list[dict]:
        """Run to ``cfg.run.steps``; returns one metrics dict per step (evaluations included)."""
        try:
            if self.step == 0:
                self.history.append(self.logger.log_eval(0, self.evaluate()))
            for step in self.logger.progress(range(self.step, self.cfg.run.steps)):
                self.step = step + 1
                metrics = self.train_step()
                if self.step % self.cfg.run.eval_every == 0 or self.step == self.cfg.run.steps:
                    metrics.update(self.evaluate())
                self.history.append(self.logger.log_step(self.step, metrics))
                if self.step % self.cfg.run.checkpoint_every == 0 or self.step == self.cfg.run.steps:
                    self.save()
        except BaseException:
            log.error("training stopped at step %d; saving a checkpoint first", self.step)
            self.save(Path(self.out) / "checkpoint-crash")
            raise
        finally:
            self.logger.close()
        self.policy.save_pretrained(self.out / "final")
        self.tokenizer.save_pretrained(self.out / "final")
        return self.history

    def train_step(self) -> dict[str, float]:
        self.timings: dict[str, float] = {}
        batch = self.next_batch()
        with self.timed("rollout"):
            batch.rollout = self.sample(batch.prompts)
        with self.timed("segment"):
            self.segment(batch)
        with self.timed("reward"):
            step_rewards, vr = self.rewards(batch)
        with self.timed("logprobs"):
            old_logprobs, ref_logprobs, entropy = self.logprobs(batch.rollout)
        with self.timed("credit"):
            advantages, returns, kl = self.credit(batch, step_rewards, vr, old_logprobs, ref_logprobs)
        with self.timed("update"):
            update_metrics = self.update(batch.rollout, advantages, old_logprobs, ref_logprobs)
        if self.step % self.cfg.run.samples_every == 0 or self.step == 1:
            self.logger.log_samples(self.step, batch, step_rewards)
        return self.metrics(batch, step_rewards, advantages, returns, kl, entropy, update_metrics)

    # -------------------------------------------------------------------------------------- phases

    def next_batch(self) -> Batch:
        problems = self.task.sample(self.data_rng, self.cfg.rollout.prompts_per_step)
        k = self.cfg.rollout.k
        return Batch(
            problems=[p for p in problems for _ in range(k)],
            prompts=[p.prompt for p in problems for _ in range(k)],
            group_ids=torch.arange(len(problems), device=self.device).repeat_interleave(k),
        )

    def policy_prompts(self, prompts: list[str]) -> list[str]:
        """The problems' text in the policy's prompt template (the PRM still sees the bare problem)."""
        r = self.cfg.rollout
        if r.template == "raw":
            return prompts
        system = r.system or COT_SYSTEM
        return [format_prompt(p, r.template, self.tokenizer, system=system) for p in prompts]

    def sample(self, prompts: list[str]):
        r = self.cfg.rollout
        return generate(
            self.policy, self.tokenizer, self.policy_prompts(prompts), max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
        )  # fmt: skip

    def segment(self, batch: Batch) -> None:
        texts, offsets = decode_with_offsets(self.tokenizer, batch.rollout.response_id_lists())
        batch.texts = texts
        batch.steps = segment_batch(texts, offsets, self.task.separator, device=self.device)
        batch.correct = [self.task.grade(t, p) for t, p in zip(texts, batch.problems)]

    def rewards(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """PRM step rewards (B, S) and verifiable rewards (B,), NaN where a prompt has no ground truth."""
        algo = self.cfg.algo
        step_rewards = torch.zeros(batch.steps.step_mask.shape, device=self.device)
        if algo.reward in ("prm", "prm+vr"):
            batch.step_scores = self.prm.score(batch.prompts, batch.steps.steps)
            step_rewards = batch.steps.pack(batch.step_scores)
            unscored = torch.isnan(step_rewards)  # steps cut off at the PRM's length limit: masked
            if unscored.any():
                batch.steps.step_mask = batch.steps.step_mask & ~unscored
                step_rewards = step_rewards.nan_to_num(0.0)
        vr = None
        if algo.reward in ("vr", "prm+vr"):
            fraction = 1.0 if algo.reward == "vr" else algo.vr_fraction
            vr = torch.tensor(
                [
                    float(c is True)
                    if self.task.has_reward_answer(prob) and has_ground_truth(p, fraction)
                    else float("nan")
                    for c, p, prob in zip(batch.correct, batch.prompts, batch.problems)
                ],
                device=self.device,
            )
        return step_rewards, vr

    @torch.no_grad()
    def logprobs(self, rollout):
        old, entropy = sequence_logprobs(self.policy, rollout, with_entropy=True)
        ref = None
        if self.reference is not None:
            ref = sequence_logprobs(self.reference, rollout)
        elif self.lora and self.cfg.algo.kl_coef > 0:
            with self.policy.disable_adapter():
                ref = sequence_logprobs(self.policy, rollout)
        return old, ref, entropy

    def credit(self, batch: Batch, step_rewards, vr, old_logprobs, ref_logprobs):
        algo, mask = self.cfg.algo, batch.rollout.response_mask.float()
        kl = kl_penalty(old_logprobs, ref_logprobs, algo.kl_estimator) if ref_logprobs is not None else None
        step_mask = batch.steps.step_mask if algo.reward != "vr" else torch.zeros_like(batch.steps.step_mask)
        penalty = -algo.kl_coef * kl if (kl is not None and algo.kl_in_reward) else None
        advantages, returns = pure_advantages(
            step_rewards, step_mask, batch.steps.step_ends, mask, batch.group_ids, vr,
            mode=algo.mode, temperature=algo.temperature, vr_coef=algo.vr_coef,
            max_len=self.cfg.rollout.max_new_tokens, token_penalty=penalty,
        )  # fmt: skip
        return advantages, returns, kl

    def update(self, rollout, advantages, old_logprobs, ref_logprobs) -> dict[str, float]:
        algo = self.cfg.algo
        size = advantages.shape[0] // algo.minibatches
        sums: dict[str, float] = {}
        count = 0
        self.policy.train()
        for _ in range(algo.ppo_epochs):
            order = torch.randperm(advantages.shape[0])
            for start in range(0, advantages.shape[0], size):
                idx = order[start : start + size]
                mini = rollout.select(idx)
                logprobs = sequence_logprobs(self.policy, mini)
                loss, m = ppo_clip_loss(
                    logprobs, old_logprobs[idx], advantages[idx], mini.response_mask, clip_ratio=algo.clip_ratio
                )
                if ref_logprobs is not None and not algo.kl_in_reward:
                    kl_loss = masked_mean(
                        kl_penalty(logprobs, ref_logprobs[idx], algo.kl_estimator), mini.response_mask
                    )
                    loss = loss + algo.kl_coef * kl_loss
                    m["kl_loss"] = kl_loss.detach()
                loss.backward()
                m["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), algo.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                m["loss"] = loss.detach()
                for key, value in m.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
        self.scheduler.step()
        self.policy.eval()
        return {f"actor/{k}": v / count for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out accuracy, greedy and sampled (the same problems for every seed and arm).

        Sampled accuracy (``run.eval_samples`` answers per problem at the rollout temperature) is the
        one with headroom on the built-in task: its warm start is nearly always right greedily.
        """
        start = time.perf_counter()
        out = {}
        if not self.heldout:
            return out
        prompts = self.policy_prompts([p.prompt for p in self.heldout])
        for name, greedy, reps in (("", True, 1), ("sampled_", False, self.cfg.run.eval_samples)):
            if reps == 0:
                continue
            rollout = generate(self.policy, self.tokenizer, [p for p in prompts for _ in range(reps)],
                               max_new_tokens=self.cfg.rollout.max_new_tokens, greedy=greedy,
                               temperature=self.cfg.rollout.temperature)  # fmt: skip
            texts = self.tokenizer.batch_decode(rollout.response_id_lists(), skip_special_tokens=True)
            problems = [p for p in self.heldout for _ in range(reps)]
            correct = [self.task.grade(t, p) is True for t, p in zip(texts, problems)]
            steps = [len(split_steps(t, self.task.separator)) for t in texts]
            out[f"eval/{name}accuracy"] = sum(correct) / len(correct)
            out[f"eval/{name}steps"] = sum(steps) / len(steps)
            out[f"eval/{name}length"] = rollout.response_mask.sum(-1).float().mean().item()
            out[f"eval/{name}truncated"] = rollout.truncated.float().mean().item()
        out["time/eval"] = time.perf_counter() - start
        return out

    # ------------------------------------------------------------------------------------ metrics

    def metrics(self, batch, step_rewards, advantages, returns, kl, entropy, update_metrics) -> dict[str, float]:
        mask = batch.rollout.response_mask
        transformed = None
        if batch.step_scores is not None:
            transformed = transform_step_rewards(
                step_rewards, batch.steps.step_mask, self.cfg.algo.mode, self.cfg.algo.temperature
            )
        metrics = response_metrics(
            correct=batch.correct, group_ids=batch.group_ids.tolist(), steps=batch.steps.steps,
            step_scores=batch.step_scores, transformed=transformed, response_mask=mask,
            truncated=batch.rollout.truncated,
        )  # fmt: skip
        metrics.update(update_metrics)
        if hasattr(self.prm, "truncated"):
            metrics["prm/truncated_inputs"] = float(self.prm.truncated)
        metrics.update(tensor_stats("advantages", advantages, mask))
        metrics.update(tensor_stats("returns", returns, mask))
        metrics["actor/entropy"] = masked_mean(entropy, mask).item()
        if kl is not None:
            metrics["actor/kl"] = masked_mean(kl, mask).item()
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        metrics.update({f"time/{k}": v for k, v in self.timings.items()})
        total = sum(self.timings.values())
        metrics["time/step"] = total
        metrics["perf/tokens_per_second"] = mask.sum().item() / max(total, 1e-9)
        flags = self.monitor.update(metrics)
        for flag in flags:
            metrics[f"hack/{flag}"] = 1.0
        return metrics

    @contextmanager
    def timed(self, phase: str):
        start = time.perf_counter()
        yield
        self.timings[phase] = time.perf_counter() - start

    # -------------------------------------------------------------------------------- checkpoints

    def save(self, folder: Path | None = None) -> None:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.getstate(),
            "monitor": vars(self.monitor),
            "history": self.history,
        }
        save_checkpoint(folder or self.out / "checkpoint", self.policy, self.tokenizer, state)

    def _resume(self) -> None:
        folder = self.out / "checkpoint"
        state = load_checkpoint(folder)
        if self.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.policy, load_file(folder / "policy" / "adapter_model.safetensors"))
        else:
            loaded = type(self.policy).from_pretrained(folder / "policy")
            self.policy.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data_rng.setstate(state["data_rng"])
        vars(self.monitor).update(state["monitor"])
        self.history = state["history"]
        self.step = state["step"]
        set_rng_states(state["rng"])
        log.info("resumed from %s at step %d", folder, self.step)
