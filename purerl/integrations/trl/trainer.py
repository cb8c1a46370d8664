"""``PureGRPOTrainer``: TRL's GRPOTrainer with PURE's credit.

TRL samples (transformers or vLLM), computes its reward functions and the log-probs it needs; then,
instead of GRPO's one advantage per completion, this trainer hands TRL PURE's token-level advantages
(B, T), which TRL's loss accepts from subclasses. The advantages come from the process-reward pipeline
that ``purerl train`` uses (:mod:`purerl.pipeline.rewards`): completions are split into steps with the
policy tokenizer, scored by a purerl PRM adapter, verifiable rewards are the reward functions' values on
the prompts that carry ground truth, and the group baselines span every process (a prompt's K
completions may sit on different processes; three numbers per completion are gathered).
"""

from __future__ import annotations

import logging
import math
import time

import torch
from trl import GRPOTrainer

from purerl.pipeline import rewards as pipeline
from purerl.pipeline.monitor import FLAGS, HackingMonitor
from purerl.pipeline.rewards import CreditSettings, ProcessGroup, RewardBatch

log = logging.getLogger(__name__)


class _QuietAllNone(logging.Filter):
    """TRL warns on every batch where all reward functions returned None for a row; with verifiable
    rewards on a share of the prompts that is most rows, by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "All reward functions returned None" not in record.getMessage()


def load_prm(args, device):
    """The PRM adapter ``args`` (a :class:`PureGRPOConfig`) names; the built-in PRM without a path."""
    from purerl.training.builders import engine_prm

    return engine_prm(args.prm_kind, args.prm_path, dtype=args.prm_dtype, device=str(args.prm_device or device),
                      trust_remote_code=args.prm_trust_remote_code, score_map=args.prm_score_map,
                      separator=args.prm_separator)  # fmt: skip


class PureGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are PURE's (``args``: a :class:`PureGRPOConfig`).

    Args:
        prm: a purerl PRM adapter (default: loaded from ``args.prm_*``; none for ``pure_reward=vr``).
        Everything else as for ``GRPOTrainer`` (``reward_funcs`` give the verifiable rewards).
    """

    def __init__(self, *args, prm=None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        self.prm = None if a.pure_reward == "vr" else (prm or load_prm(a, self.accelerator.device))
        self.pure_settings = CreditSettings(
            mode=a.credit_mode, temperature=a.credit_temperature, vr_coef=a.vr_coef, max_len=a.max_completion_length,
            process_rewards=a.pure_reward != "vr",
        )  # fmt: skip
        self.pure_monitor = HackingMonitor()
        self._pure_rewards: torch.Tensor | None = None
        self._pure_prm_seconds = 0.0
        trl_log = logging.getLogger("trl.trainer.grpo_trainer")
        if not any(isinstance(f, _QuietAllNone) for f in trl_log.filters):  # once, however many trainers
            trl_log.addFilter(_QuietAllNone())

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pure_rewards = rewards  # (B_all, F): every process's rows, in rank order
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            start = time.perf_counter()
            batch = self.pure_batch(inputs, output)
            pipeline.assign_credit(batch, self.pure_settings, self.process_group())
            output["advantages"] = batch.advantages
            self._log_pure(batch, time.perf_counter() - start)
        return output

    def process_group(self) -> ProcessGroup | None:
        """How this process sees the others (None when it is alone)."""
        if self.accelerator.num_processes == 1:
            return None
        return ProcessGroup(all_gather=self.accelerator.gather, rank=self.accelerator.process_index)

    def pure_batch(self, inputs: list[dict], output: dict) -> RewardBatch:
        """The pipeline's record of this process's completions: steps, PRM step rewards, verifiable
        rewards (the reward functions' weighted sum, NaN where none applies or the prompt is outside
        ``vr_fraction``), group ids counted over every process."""
        a, mask = self.args, output["completion_mask"]
        ids = [row[: int(n)].tolist() for row, n in zip(output["completion_ids"], mask.sum(-1))]
        size, rank = len(ids), self.accelerator.process_index
        device = mask.device
        group_ids = (rank * size + torch.arange(size, device=device)) // self.num_generations
        truncated = torch.tensor([not row or row[-1] not in self.eos_token_ids for row in ids], device=device)
        problems = [self._problem_text(x) for x in inputs]
        batch = RewardBatch(problems, group_ids, mask, truncated)
        pipeline.segment(batch, self.processing_class, ids, a.step_separator)
        rewards = self._pure_rewards[rank * size : (rank + 1) * size]
        weights = self.reward_weights.to(rewards.device)
        vr = torch.where(rewards.isnan().all(-1), float("nan"), (rewards * weights).nansum(-1)).float().to(device)
        batch.correct = [None if math.isnan(v) else v >= 0.5 for v in vr.tolist()]
        start = time.perf_counter()
        pipeline.score_steps(batch, self.prm)
        self._pure_prm_seconds = time.perf_counter() - start
        if a.pure_reward != "prm":
            fraction = 1.0 if a.pure_reward == "vr" else a.vr_fraction
            keep = torch.tensor([pipeline.has_ground_truth(p, fraction) for p in problems], device=device)
            batch.verifiable_rewards = torch.where(keep, vr, torch.full_like(vr, float("nan")))
        return batch

    def _problem_text(self, row: dict) -> str:
        problem = row.get(self.args.problem_column)
        if isinstance(problem, str):
            return problem
        prompt = row["prompt"]
        return prompt if isinstance(prompt, str) else prompt[-1]["content"]

    def _log_pure(self, batch: RewardBatch, seconds: float) -> None:
        """PURE's metrics over every process's completions and hacking flags into TRL's logs, and PURE's
        advantage at each completion's first token into TRL's completions table."""
        metrics = pipeline.batch_metrics(batch, self.pure_settings)
        metrics["time/pure"] = seconds  # the whole pipeline: segmentation, PRM, credit
        metrics["time/prm"] = self._pure_prm_seconds
        keys = sorted(metrics)
        local = torch.tensor([float("nan") if metrics[k] is None else metrics[k] for k in keys],
                             dtype=torch.float64, device=batch.response_mask.device)  # fmt: skip
        every = self.accelerator.gather(local[None]).view(-1, len(keys))
        merged = {}
        for k, column in zip(keys, every.unbind(-1)):  # extremes stay extremes; the rest: mean over processes
            finite = column[~column.isnan()]
            if k.endswith(("/max", "steps_max")):
                merged[k] = finite.max().item() if finite.numel() else float("nan")
            elif k.endswith("/min"):
                merged[k] = finite.min().item() if finite.numel() else float("nan")
            else:
                merged[k] = column.nanmean().item()
        merged["reward/pass_at_k"] = self._pass_at_k(batch)
        flags = set(self.pure_monitor.update(merged))
        for key, value in merged.items():
            self._metrics["train"][f"pure/{key}"].append(value)
        for flag in FLAGS:
            self._metrics["train"][f"pure/hack/{flag}"].append(float(flag in flags))
        first = self.accelerator.gather(batch.advantages[:, 0].contiguous()).tolist()
        for _ in first:
            self._logs["advantages"].pop()
        self._logs["advantages"].extend(first)

    def _pass_at_k(self, batch: RewardBatch) -> float:
        """Share of prompts with a right completion, over whole groups (which may span processes)."""
        right = torch.tensor([float(c is True) for c in batch.correct], dtype=torch.float64)
        mine = torch.stack([batch.group_ids.double().cpu(), right], -1).to(batch.response_mask.device)
        every = self.accelerator.gather(mine).cpu()
        groups: dict[int, bool] = {}
        for group, ok in every.tolist():
            groups[int(group)] = groups.get(int(group), False) or ok > 0
        return sum(groups.values()) / max(1, len(groups))
