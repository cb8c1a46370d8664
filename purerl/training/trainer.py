"""The PURE training loop: one call per phase, in the order of the paper.

sample K responses per prompt -> segment steps -> PRM step rewards + verifiable rewards -> credit
(min / soft_min / sum) -> old and reference log-probs -> PPO-clip update -> metrics, hacking monitors
-> logs, held-out evaluation, checkpoints.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from purerl.algo.kl import kl_penalty
from purerl.algo.losses import ppo_clip_loss
from purerl.algo.stats import masked_mean
from purerl.config import TrainConfig, save_config, validate
from purerl.config.validation import check_machine
from purerl.grading import start_worker
from purerl.io.logger import RunLogger
from purerl.pipeline import rewards as pipeline
from purerl.pipeline.monitor import HackingMonitor
from purerl.pipeline.rewards import CreditSettings, RewardBatch
from purerl.pipeline.steps import split_steps
from purerl.rollout import Rollout, sample_answers
from purerl.rollout.hf import sequence_logprobs
from purerl.tasks.prompts import COT_SYSTEM, format_prompt
from purerl.training import checkpoint as ckpt
from purerl.training.builders import build_policy, build_prm, build_rollout, build_task
from purerl.training.refresh import build_refresher
from purerl.training.run_control import RunStopped, StopSignals, claim_run_folder
from purerl.training.run_state import RunState, warmup

log = logging.getLogger(__name__)


@dataclass
class Batch(RewardBatch):
    """The pipeline's record of one RL step, plus what purerl's own loop knows: the task's problems
    (ground truth) and the sampled rollout."""

    problems: list = field(default_factory=list)
    rollout: Rollout | None = None


class Trainer(RunState):
    """``purerl train``: ``resume`` continues from the newest complete checkpoint (or ``resume_from``, a
    checkpoint folder); ``overwrite`` replaces a previous run in the folder; ``allow_change``: keys
    (or sections) whose value may differ from the checkpoint's config on resume."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 allow_change: list[str] | tuple[str, ...] = (), resume_from: str | None = None):  # fmt: skip
        validate(cfg)  # every config error before any model is built
        check_machine(cfg)  # devices and model paths, before the run folder is touched
        self.cfg = cfg
        if cfg.trl:
            log.warning(
                "trl: %d key(s) for python -m purerl.integrations.trl; purerl train leaves them alone", len(cfg.trl)
            )
        self.out = Path(cfg.run.out_dir)
        claim_run_folder(self.out, resume or resume_from is not None, overwrite,
                         resume_flag="--resume-from" if resume_from else "--resume")  # fmt: skip
        found = self._find_resume(resume_from, list(allow_change)) if resume or resume_from else None
        self.out.mkdir(parents=True, exist_ok=True)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.task = build_task(cfg)
        self.heldout = self.task.heldout
        if getattr(self.task, "math_grading", False):
            start_worker()  # a fresh process, started while the models load (purerl.grading.worker)
        self.policy, self.tokenizer = build_policy(cfg)
        self.device = next(self.policy.parameters()).device
        self.backend = build_rollout(cfg, self.policy, self.tokenizer)
        self.lora = cfg.policy.lora_rank > 0
        self.reference = None
        if cfg.algo.kl_coef > 0 and not self.lora:  # with LoRA the reference is the base: adapter off
            self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.prm = build_prm(cfg, self.task) if cfg.algo.reward != "vr" else None
        self.refresher = build_refresher(cfg, self.prm)  # the online PRM refresh (refresh.enabled)
        self.settings = CreditSettings.from_algo(cfg.algo, cfg.rollout.max_new_tokens)
        # building a model may train and cache it (seeding torch itself): seed again, so that a run
        # is the same whether its models came from the cache or not
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.algo.lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup)
        self.data_rng = random.Random(f"data-{cfg.run.seed}")
        self.monitor = HackingMonitor(cfg.run.monitor)
        self.step, self.rollbacks, self.flags_since_save = 0, 0, set()
        self.saved_step, self.saved, self.signals = -1, None, None
        self.history: list[dict] = []
        self.boundary: dict | None = None  # the state at the start of the current step, for a crash save
        self.phase = "idle"
        if found is not None:
            self._restore(found.folder, state=self.__dict__.pop("resume_state"))
        save_config(cfg, self.out / "config.yaml")
        self.logger = RunLogger(self.out, cfg, start_step=self.step)
        if found is not None:
            self._log_resume(found)

    # ---------------------------------------------------------------------------------------- loop

    def train(self) -> list[dict]:
        """Run to ``cfg.run.steps``; returns one metrics dict per step (evaluations included).

        SIGTERM / SIGINT stop it at the end of the current step with a checkpoint (:class:`RunStopped`,
        exit code 128 + the signal); a crash before the step's update saves the state at the step's
        start (resumable exactly); a crash inside the update leaves the last checkpoint as it is.
        """
        with StopSignals() as signals:
            self.signals = signals
            try:
                self._loop(signals)
            except RunStopped:
                raise
            except KeyboardInterrupt:  # a second signal: the step abandoned
                self._save_on_crash()
                raise RunStopped(f"stopped at once in step {self.step} by a second signal; last checkpoint: "
                                 f"{self.saved or 'none'}; continue with --resume", 130) from None  # fmt: skip
            except BaseException:
                self._save_on_crash()
                raise
            finally:
                self.logger.close()
        ckpt.save_final(self.out / "final", self.policy, self.tokenizer)
        if self.refresher is not None:  # the refreshed PRM, loadable as prm.path
            self.refresher.save(self.out / "final_prm", self.cfg.prm)
        return self.history

    def _loop(self, signals: StopSignals) -> None:
        if self.step == 0 and not self.history:
            self.history.append(self.logger.log_eval(0, self.evaluate()))
            self.monitor.update(self.history[-1])  # the held-out start the detectors compare with
            if self.acting_flags():
                self.save()  # a clean state to stop at or roll back to before the first periodic checkpoint
        self.logger.progress(self.step, self.cfg.run.steps)
        while self.step < self.cfg.run.steps:
            if signals.received:
                raise signals.stopped(self.step, self.save() if self.saved_step != self.step else self.saved)
            self.boundary, self.phase = self._state(), "start"
            self.step += 1
            metrics = self.train_step()
            evaluated = self.step % self.cfg.run.eval_every == 0 or self.step == self.cfg.run.steps
            if evaluated:
                metrics.update(self.evaluate())  # before the monitor: the held-out fall is its strongest signal
            flags = self.monitor.update(metrics)
            metrics.update({f"hack/{flag}": 1.0 for flag in flags})
            self.history.append(self.logger.log_step(self.step, metrics))
            self.boundary = None
            if self._guard(flags):
                continue  # rolled back
            if (
                self.step % self.cfg.run.checkpoint_every == 0
                or self.step == self.cfg.run.steps
                or (evaluated and self.acting_flags())
            ):  # with a guard that acts, every evaluated step is a checkpoint it may return to
                self.save()

    def train_step(self) -> dict[str, float]:
        """One RL step; each phase reads from and writes to the same :class:`Batch`."""
        self.timings: dict[str, float] = {}
        batch = self.next_batch()
        with self.timed("rollout"):
            self.sample(batch)
        with self.timed("segment"):
            self.segment(batch)
        with self.timed("reward"):
            self.rewards(batch)
        with self.timed("logprobs"):
            self.logprobs(batch)
        with self.timed("credit"):
            pipeline.assign_credit(batch, self.settings)
        with self.timed("update"):
            update_metrics = self.update(batch)
        if self.refresher is not None:
            with self.timed("refresh"):
                update_metrics.update(self.refresh(batch))
        if self.step % self.cfg.run.samples_every == 0 or self.step == 1:
            self.logger.log_samples(self.step, batch)
        return self.metrics(batch, update_metrics)

    # -------------------------------------------------------------------------------------- phases

    def next_batch(self) -> Batch:
        problems = self.task.sample(self.data_rng, self.cfg.rollout.prompts_per_step)
        k = self.cfg.rollout.k
        return Batch(
            prompts=[p.prompt for p in problems for _ in range(k)],
            group_ids=torch.arange(len(problems), device=self.device).repeat_interleave(k),
            problems=[p for p in problems for _ in range(k)],
        )

    def policy_prompts(self, prompts: list[str]) -> list[str]:
        """The problems' text in the policy's prompt template (the PRM still sees the bare problem)."""
        r = self.cfg.rollout
        if r.template == "raw":
            return prompts
        system = r.system or COT_SYSTEM
        return [format_prompt(p, r.template, self.tokenizer, system=system) for p in prompts]

    def sample(self, batch: Batch) -> None:
        r = self.cfg.rollout
        extra = {"min_new_tokens": r.min_new_tokens} if r.min_new_tokens else {}  # only backends that know it
        batch.rollout = self.backend.generate(self.policy_prompts(batch.prompts), max_new_tokens=r.max_new_tokens,
                                              temperature=r.temperature, **extra)  # fmt: skip
        batch.response_mask, batch.truncated = batch.rollout.response_mask, batch.rollout.truncated

    def segment(self, batch: Batch) -> None:
        pipeline.segment(batch, self.tokenizer, batch.rollout.response_id_lists(), self.task.separator)
        pipeline.grade(batch, lambda i, text: self.task.grade(text, batch.problems[i]))

    def rewards(self, batch: Batch) -> None:
        """PRM step rewards (B, S) and verifiable rewards (B,), NaN where a prompt has no ground truth."""
        algo = self.cfg.algo
        pipeline.score_steps(batch, self.prm)
        if algo.reward != "prm":
            answers = [self.task.has_reward_answer(prob) for prob in batch.problems]
            pipeline.verify(batch, pipeline.vr_prompts(batch.prompts, algo.reward, algo.vr_fraction, answers))

    def refresh(self, batch: Batch) -> dict[str, float]:
        """The PRM learns from this step's grades (``refresh.labels``: the prompts with a verifiable reward,
        or every prompt with a gold answer), after the step used its scores."""
        if self.cfg.refresh.labels == "vr":
            learn = (~batch.verifiable_rewards.isnan()).tolist() if batch.verifiable_rewards is not None else []
        else:
            learn = [self.task.has_reward_answer(p) for p in batch.problems]
        added = self.refresher.observe(batch.prompts, batch.steps.steps, batch.correct, learn)
        return {**self.refresher.update(), "refresh/added": float(added)}

    @property
    def on_policy(self) -> bool:
        """One PPO epoch of one minibatch and no reference: the update's own forward gives the sampling
        policy's log-probs (detached) and entropy, so no separate pass computes them."""
        a = self.cfg.algo
        return a.ppo_epochs == 1 and a.minibatches == 1 and self.reference is None and not (self.lora and a.kl_coef > 0)

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> None:
        """Log-probs of the sampled tokens under the sampling policy (with its entropy) and the reference;
        nothing here when :attr:`on_policy` (the update fills them in)."""
        if self.on_policy:
            return
        batch.logprobs, batch.entropy = sequence_logprobs(self.policy, batch.rollout, with_entropy=True)
        if self.reference is not None:
            batch.ref_logprobs = sequence_logprobs(self.reference, batch.rollout)
        elif self.lora and self.cfg.algo.kl_coef > 0:
            with self.policy.disable_adapter():
                batch.ref_logprobs = sequence_logprobs(self.policy, batch.rollout)

    def update(self, batch: Batch) -> dict[str, float]:
        algo = self.cfg.algo
        size = batch.advantages.shape[0] // algo.minibatches
        sums: dict[str, float] = {}
        count = 0
        self.policy.train()
        for _ in range(algo.ppo_epochs):
            order = torch.randperm(batch.advantages.shape[0])
            for start in range(0, batch.advantages.shape[0], size):
                m = self.minibatch_step(batch, order[start : start + size])
                for key, value in m.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
        self.scheduler.step()
        self.policy.eval()
        return {f"actor/{k}": v / count for k, v in sums.items()}

    def minibatch_step(self, batch: Batch, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step of PPO-clip (and the KL loss, unless KL is in the reward) on rows ``idx``."""
        algo = self.cfg.algo
        mini = batch.rollout.select(idx)
        if batch.logprobs is None:  # on-policy: this forward is the sampling policy's
            logprobs, entropy = sequence_logprobs(self.policy, mini, with_entropy=True)
            batch.logprobs, batch.entropy = torch.empty_like(logprobs), torch.empty_like(entropy)
            batch.logprobs[idx], batch.entropy[idx] = logprobs.detach(), entropy
        else:
            logprobs = sequence_logprobs(self.policy, mini)
        loss, m = ppo_clip_loss(
            logprobs, batch.logprobs[idx], batch.advantages[idx], mini.response_mask, clip_ratio=algo.clip_ratio
        )
        if batch.ref_logprobs is not None and not algo.kl_in_reward:
            kl_loss = masked_mean(kl_penalty(logprobs, batch.ref_logprobs[idx], algo.kl_estimator), mini.response_mask)
            loss = loss + algo.kl_coef * kl_loss
            m["kl_loss"] = kl_loss.detach()
        if not torch.isfinite(loss):
            raise RunStopped(f"non-finite loss ({loss.item()}) in step {self.step}, before its optimizer step; "
                             f"last checkpoint: {self.saved or 'none'}", 4)  # fmt: skip
        loss.backward()
        m["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), algo.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        m["loss"] = loss.detach()
        return m

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
            problems = [p for p in self.heldout for _ in range(reps)]
            answers = sample_answers(
                self.backend, [p for p in prompts for _ in range(reps)], max_new_tokens=self.cfg.rollout.max_new_tokens,
                greedy=greedy, temperature=self.cfg.rollout.temperature,
                grade=lambda i, text, ps=problems: self.task.grade(text, ps[i]) is True,
            )  # fmt: skip
            steps = [len(split_steps(t, self.task.separator)) for t in answers.texts]
            out[f"eval/{name}accuracy"] = sum(answers.correct) / len(answers.correct)
            out[f"eval/{name}size"] = float(len(answers.correct))
            out[f"eval/{name}steps"] = sum(steps) / len(steps)
            out[f"eval/{name}length"] = answers.rollout.response_mask.sum(-1).float().mean().item()
            out[f"eval/{name}truncated"] = answers.rollout.truncated.float().mean().item()
        out["time/eval"] = time.perf_counter() - start
        return out

    # ------------------------------------------------------------------------------------ metrics

    def metrics(self, batch: Batch, update_metrics: dict[str, float]) -> dict[str, float]:
        metrics = pipeline.batch_metrics(batch, self.settings)
        metrics.update(update_metrics)
        if hasattr(self.prm, "truncated"):
            metrics["prm/truncated_inputs"] = float(self.prm.truncated)
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        metrics["rollout/cut_prompts"] = float(getattr(batch.rollout, "cut_prompts", 0))
        metrics.update({f"time/{k}": v for k, v in self.timings.items()})
        total = sum(self.timings.values())
        metrics["time/step"] = total
        metrics["perf/tokens_per_second"] = batch.response_mask.sum().item() / max(total, 1e-9)
        return metrics

    @contextmanager
    def timed(self, phase: str):
        if self.signals is not None:
            self.signals.check_urgent()
        self.phase = phase
        start = time.perf_counter()
        yield
        self.timings[phase] = time.perf_counter() - start
