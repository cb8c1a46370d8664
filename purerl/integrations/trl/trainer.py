"""``PureGRPOTrainer``: TRL's GRPOTrainer with PURE's credit.

TRL samples (transformers or vLLM), computes its reward functions and the log-probs it needs; then,
instead of GRPO's one advantage per completion, this trainer hands TRL PURE's token-level advantages
(B, T), which TRL's loss accepts from subclasses. The advantages come from the process-reward pipeline
``purerl train`` uses (:mod:`purerl.pipeline.rewards`), with the credit settings of the same purerl config
(:meth:`CreditSettings.from_algo`), the PRM of its ``prm`` section (:func:`purerl.prm.loading.load_prm`)
and the one verifiable-reward rule (:func:`purerl.pipeline.rewards.vr_prompts`); group baselines and
whitening span every process (a prompt's K completions may sit on different processes).

KL in the reward (``algo.kl_in_reward``, the paper's): TRL computes the reference log-probs (its
``beta`` is ``algo.kl_coef``), the pipeline turns them and the sampling policy's log-probs into the
per-token penalty ``-kl_coef * kl`` inside the returns, and TRL's loss runs with beta 0.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from trl import GRPOTrainer

from purerl.config import TrainConfig, task_name
from purerl.integrations.trl.config import check_agreement, optimizer_steps_per_step
from purerl.integrations.trl.data import TaskReward
from purerl.integrations.trl.guards import PureGuards
from purerl.integrations.trl.metrics import log_pure
from purerl.pipeline import rewards as pipeline
from purerl.pipeline.advantages import CreditSettings, ProcessGroup
from purerl.pipeline.monitor import HackingMonitor
from purerl.pipeline.rewards import RewardBatch
from purerl.prm.loading import load_prm
from purerl.registry import TASKS
from purerl.training.run_state import warmup

log = logging.getLogger(__name__)


class _QuietAllNone(logging.Filter):
    """TRL warns on every batch where all reward functions returned None for a row; rows without a gold
    answer are expected on datasets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "All reward functions returned None" not in record.getMessage()


class PureGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are PURE's.

    Args:
        purerl: the purerl config (:class:`purerl.config.TrainConfig`) whose ``algo``, ``prm``, ``rollout``
            and ``data`` sections say what credit, PRM and verifiable rewards are; ``args`` must agree with it
            where purerl owns a setting (build both with :func:`purerl.integrations.trl.load_route_config` and
            :func:`purerl.integrations.trl.grpo_config`).
        task: the config's task (default: built from it); it gives the step separator and the rule PRM.
        prm: a purerl PRM adapter (default: :func:`purerl.prm.loading.load_prm` of ``purerl.prm``).
        Everything else as for ``GRPOTrainer`` (``reward_funcs`` give the graded answers).
    """

    def __init__(self, *args, purerl: TrainConfig, task=None, prm=None, **kwargs):
        super().__init__(*args, **kwargs)
        check_agreement(purerl, self.args)
        self.purerl = purerl
        self.task = task if task is not None else TASKS.resolve(task_name(purerl)).from_config(purerl)
        algo = purerl.algo
        self.pure_settings = CreditSettings.from_algo(algo, purerl.rollout.max_new_tokens)
        self.kl_in_reward = algo.kl_in_reward and algo.kl_coef > 0
        if algo.reward == "vr":
            self.prm = None
        else:
            self.prm = prm or load_prm(purerl.prm, self.task, builtin=purerl, device=self._prm_device())
        self.pure_monitor = HackingMonitor(purerl.run.monitor)
        self.pure_step, self.pure_flags, self.pure_flag_global_step = 0, [], 0
        self.pure_guards = PureGuards(self)
        self.add_callback(self.pure_guards)
        self._pure_rewards: torch.Tensor | None = None
        self._pure_prm_seconds = 0.0
        trl_log = logging.getLogger("trl.trainer.grpo_trainer")
        if not any(isinstance(f, _QuietAllNone) for f in trl_log.filters):  # once, however many trainers
            trl_log.addFilter(_QuietAllNone())

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """purerl's learning-rate schedule (``algo.lr`` after the warm-up of
        :func:`purerl.training.run_state.warmup`), counted in purerl steps: TRL counts optimizer steps."""
        if self.lr_scheduler is None:
            per_step = optimizer_steps_per_step(self.purerl)

            def factor(step: int) -> float:
                return warmup(step // per_step)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def _prm_device(self) -> str:
        """``prm.device``; a device type without an index (``cuda``) means this process's device of that type."""
        wanted, mine = torch.device(self.purerl.prm.device), self.accelerator.device
        return str(mine if wanted.index is None and wanted.type == mine.type else wanted)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pure_rewards = rewards  # (B_all, F): every process's rows, in rank order
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            start = time.perf_counter()
            batch = self.pure_credit(inputs, output)
            output["advantages"] = batch.advantages
            self.pure_flag_global_step = self.state.global_step  # the optimizer steps before this round
            log_pure(self, batch, time.perf_counter() - start)
        return output

    def _compute_loss(self, model, inputs):
        if not self.kl_in_reward:
            return super()._compute_loss(model, inputs)
        beta, self.beta = self.beta, 0.0  # the KL is in the advantages already: none in the loss
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.beta = beta

    def process_group(self) -> ProcessGroup | None:
        """How this process sees the others (None when it is alone)."""
        if self.accelerator.num_processes == 1:
            return None
        return ProcessGroup(all_gather=self.accelerator.gather, rank=self.accelerator.process_index)

    def pure_credit(self, inputs: list[dict], output: dict) -> RewardBatch:
        """PURE's credit for one generation round of this process: :meth:`pure_batch`, the KL penalty from
        ``output``'s log-probs when it goes into the reward, then :func:`purerl.pipeline.rewards.assign_credit`.

        ``output`` needs ``completion_ids`` and ``completion_mask`` (B, T), and for KL in the reward
        ``ref_per_token_logps`` and the sampling policy's ``old_per_token_logps`` (computed here from
        ``prompt_ids`` / ``prompt_mask`` when TRL did not need them)."""
        batch = self.pure_batch(inputs, output)
        if self.kl_in_reward:
            batch.ref_logprobs = output["ref_per_token_logps"]
            batch.logprobs = output.get("old_per_token_logps")
            if batch.logprobs is None:
                batch.logprobs = self._sampling_logprobs(output)
        pipeline.assign_credit(batch, self.pure_settings, self.process_group())
        return batch

    @torch.no_grad()
    def _sampling_logprobs(self, output: dict) -> torch.Tensor:
        """The sampling policy's log-probs of the completions (TRL skips them when its update is on-policy)."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, ids, mask, output["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size
        )
        return logps

    def _grades(self, size: int) -> list[bool | None] | None:
        """The task's own grades of this process's completions (None where no answer was found), when
        purerl's :class:`TaskReward` graded them; else None (the reward values stand in)."""
        for func in self.reward_funcs:
            if isinstance(func, TaskReward) and len(func.last_grades) == size:
                return list(func.last_grades)
        return None

    def pure_batch(self, inputs: list[dict], output: dict) -> RewardBatch:
        """The pipeline's record of this process's completions: steps, PRM step rewards, grades and
        verifiable rewards (the reward functions' weighted sum on the prompts :func:`vr_prompts` picks,
        NaN elsewhere), group ids counted over every process."""
        mask = output["completion_mask"]
        ids = [row[: int(n)].tolist() for row, n in zip(output["completion_ids"], mask.sum(-1))]
        size, rank, device = len(ids), self.accelerator.process_index, mask.device
        group_ids = (rank * size + torch.arange(size, device=device)) // self.num_generations
        truncated = torch.tensor([not row or row[-1] not in self.eos_token_ids for row in ids], device=device)
        problems = [self._problem_text(x) for x in inputs]
        batch = RewardBatch(problems, group_ids, mask, truncated)
        pipeline.segment(batch, self.processing_class, ids, self.task.separator)
        rewards = self._pure_rewards[rank * size : (rank + 1) * size]
        weights = self.reward_weights.to(rewards.device)
        graded = torch.where(rewards.isnan().all(-1), float("nan"), (rewards * weights).nansum(-1)).float().to(device)
        batch.correct = self._grades(size) or [None if math.isnan(v) else v >= 0.5 for v in graded.tolist()]
        start = time.perf_counter()
        pipeline.score_steps(batch, self.prm)
        self._pure_prm_seconds = time.perf_counter() - start
        if self.purerl.algo.reward != "prm":
            batch.verifiable_rewards = self._verifiable_rewards(inputs, problems, graded)
        return batch

    @staticmethod
    def _problem_text(row: dict) -> str:
        """What the PRM reads: the row's bare ``problem`` (purerl's rows have it), else its prompt's text."""
        problem = row.get("problem")
        if isinstance(problem, str):
            return problem
        prompt = row["prompt"]
        return prompt if isinstance(prompt, str) else prompt[-1]["content"]

    def _verifiable_rewards(self, inputs: list[dict], problems: list[str], graded: torch.Tensor) -> torch.Tensor:
        """The graded rewards on the prompts :func:`purerl.pipeline.rewards.vr_prompts` picks (among those
        with a reward answer and a reward value), NaN elsewhere."""
        algo = self.purerl.algo
        answers = [
            bool(x.get("has_reward_answer", True)) and not math.isnan(v) for x, v in zip(inputs, graded.tolist())
        ]
        keep = pipeline.vr_prompts(problems, algo.reward, algo.vr_fraction, answers)
        return torch.where(torch.tensor(keep, device=graded.device), graded, torch.full_like(graded, float("nan")))
