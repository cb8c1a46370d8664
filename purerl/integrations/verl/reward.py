"""The ``pure`` reward manager for verl's reward loop: steps, PRM scores and verifiable rewards.

For each response it decodes the token ids with the policy tokenizer, splits them into steps located
in those tokens, scores the steps with the PRM of the purerl config's ``prm`` section (under
``algorithm.pure``: :mod:`purerl.integrations.verl.config`; loaded by purerl's one loader) and grades
each answer that has a ground truth with verl's rule-based scorer (or ``compute_score``); the grade
becomes a verifiable reward on the prompts :func:`purerl.pipeline.rewards.vr_prompts` picks
(``algo.reward``, ``algo.vr_fraction``), the one rule every route uses. verl 0.9's reward loop carries
one scalar per response, so the step layout travels in ``reward_extra_info`` (JSON strings) to the
``pure_sync`` trainer, which hands it to the ``pure`` estimator; the scalar itself is 0.
"""

from __future__ import annotations

import inspect
import json
import math
import threading

import torch
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.reward_score import default_compute_score

from purerl.config import task_name
from purerl.integrations.verl.config import check_plugin_config, read_pure
from purerl.integrations.verl.estimator import STEP_ENDS, STEP_REWARDS, VR
from purerl.integrations.verl.monitoring import LENGTH, REPETITION, TRUNCATED
from purerl.pipeline import rewards as pipeline
from purerl.pipeline.metrics import repetition_score
from purerl.pipeline.rewards import RewardBatch
from purerl.prm.loading import load_prm
from purerl.registry import TASKS


def step_separator(cfg) -> str:
    """The step separator ``purerl train`` splits this config's responses at: its task's (the built-in
    task's own), else ``data.separator``."""
    task = TASKS.resolve(task_name(cfg))
    return getattr(task, "separator", None) or cfg.data.separator


def problem_text(item) -> str:
    """The bare problem the PRM reads: ``extra_info.question`` (verl's math recipes keep it there), else
    the last user message of ``raw_prompt``."""
    extra = item.non_tensor_batch.get("extra_info") or {}
    if isinstance(extra, dict) and isinstance(extra.get("question"), str):
        return extra["question"]
    raw = item.non_tensor_batch.get("raw_prompt")
    if raw is not None and len(raw):
        return raw[-1]["content"] if isinstance(raw[-1], dict) else str(raw[-1])
    return ""


def step_info(tokenizer, prm, problem: str, response_ids: list[int], separator: str) -> dict:
    """The step layout of one response: each step's PRM score (None where the PRM could not see it) and
    the index of its last token among ``response_ids``, as JSON strings, and the number of steps; for the
    hacking detectors its length in tokens, whether it was cut (no EOS at its end) and its repetition."""
    batch = RewardBatch([problem], torch.zeros(1, dtype=torch.long), torch.ones(1, len(response_ids)))
    pipeline.segment(batch, tokenizer, [response_ids], separator)
    pipeline.score_steps(batch, prm)
    n = int(batch.steps.num_steps[0])
    ends = batch.steps.step_ends[0, :n].tolist()
    if batch.step_scores is None:
        scores = [0.0] * n
    else:
        scores = [None if math.isnan(x) else float(x) for x in batch.step_scores[0]]
    eos = getattr(tokenizer, "eos_token_id", None)
    return {STEP_REWARDS: json.dumps(scores), STEP_ENDS: json.dumps(ends), "pure_steps": n,
            LENGTH: len(response_ids), TRUNCATED: not response_ids or response_ids[-1] != eos,
            REPETITION: repetition_score(batch.steps.steps[0])}  # fmt: skip


@register("pure")
class PureRewardManager(RewardManagerBase):
    """verl reward manager ``pure`` (select it with ``reward.reward_manager.name=pure``)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **kwargs):  # fmt: skip
        super().__init__(config, tokenizer, compute_score)
        check_plugin_config(config)
        self.compute_score = compute_score or default_compute_score
        self.cfg = read_pure(config).cfg  # the purerl config under algorithm.pure, checked as purerl train checks it
        self.separator = step_separator(self.cfg)
        self._prm = None
        self._lock = threading.Lock()  # one PRM per worker, one scoring at a time

    @property
    def prm(self):
        """The PRM of the config's ``prm`` section through purerl's one loader (None with ``algo.reward=vr``)."""
        with self._lock:
            if self._prm is None and self.cfg.algo.reward != "vr":
                task = TASKS.resolve(task_name(self.cfg))
                self._prm = load_prm(self.cfg.prm, task, builtin=self.cfg)  # once per reward worker, on first use
        return self._prm

    def steps(self, item) -> tuple[dict, str, str]:
        """The step layout of one response (a ``DataProtoItem``), its problem and its decoded text."""
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        ids = responses[:length].tolist()
        problem = problem_text(item)
        prm = self.prm
        with self._lock:
            info = step_info(self.tokenizer, prm, problem, ids, self.separator)
        return info, problem, self.tokenizer.decode(ids, skip_special_tokens=True)

    async def grade(self, item, text: str) -> float | None:
        """verl's rule-based score of the answer (a sync or async ``compute_score``); None without a
        ground truth."""
        truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        if truth in (None, ""):
            return None
        kwargs = {"data_source": item.non_tensor_batch.get("data_source"), "solution_str": text,
                  "ground_truth": truth, "extra_info": item.non_tensor_batch.get("extra_info")}  # fmt: skip
        if inspect.iscoroutinefunction(self.compute_score):
            result = await self.compute_score(**kwargs)
        else:
            result = await self.loop.run_in_executor(None, lambda: self.compute_score(**kwargs))
        return float(result["score"] if isinstance(result, dict) else result)

    async def run_single(self, data) -> dict:
        item = data[-1:][0]  # for multi-sequence outputs, the last sequence (as verl's own managers)
        info, problem, text = await self.loop.run_in_executor(None, lambda: self.steps(item))
        acc = await self.grade(item, text)  # every row with a ground truth: the accuracy verl logs
        algo = self.cfg.algo
        (use_vr,) = pipeline.vr_prompts([problem], algo.reward, algo.vr_fraction, [acc is not None])
        info[VR] = acc if use_vr else None  # the verifiable reward, on the prompts purerl's one rule picks
        info["acc"] = acc
        return {"reward_score": 0.0, "reward_extra_info": info}
