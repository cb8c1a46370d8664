"""The ``pure`` reward manager for verl's reward loop: steps, PRM scores and verifiable rewards.

For each response it decodes the token ids with the policy tokenizer, splits them into steps located
in those tokens, scores the steps with a purerl PRM adapter and, on the prompts that carry ground
truth (a ``reward.pure.vr_fraction`` share of them, chosen as ``purerl train`` chooses), grades the
answer with verl's rule-based scorer. verl 0.9's reward loop carries one scalar per response, so the
step layout travels in ``reward_extra_info`` (JSON strings) to the ``pure_sync`` trainer, which hands
it to the ``pure`` estimator; the scalar itself is 0.
"""

from __future__ import annotations

import json
import math

import torch
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.reward_score import default_compute_score

from purerl import process_rewards as pipeline
from purerl.integrations.verl.estimator import STEP_ENDS, STEP_REWARDS, VR
from purerl.process_rewards import RewardBatch

DEFAULTS = {"reward": "prm+vr", "vr_fraction": 0.1, "separator": "\n\n", "prm_kind": "token_classification",
            "prm_path": None, "prm_dtype": "float32", "prm_device": "cpu", "prm_score_map": "none",
            "prm_separator": "\n", "prm_trust_remote_code": False}  # fmt: skip
"""``reward.pure.*`` keys and their defaults."""


def pure_settings(config) -> dict:
    """``reward.pure`` of a verl config, over :data:`DEFAULTS`; unknown keys are an error."""
    reward = config.get("reward") if config is not None else None
    given = dict((reward.get("pure") if reward is not None else None) or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"reward.pure: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def load_prm(settings: dict):
    """The PRM adapter ``reward.pure.prm_*`` names (the built-in PRM without a path)."""
    if settings["reward"] == "vr":
        return None
    from purerl.builders import engine_prm

    return engine_prm(settings["prm_kind"], settings["prm_path"], dtype=settings["prm_dtype"],
                      device=settings["prm_device"], trust_remote_code=settings["prm_trust_remote_code"],
                      score_map=settings["prm_score_map"], separator=settings["prm_separator"])  # fmt: skip


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
    the index of its last token among ``response_ids``, as JSON strings, and the number of steps."""
    batch = RewardBatch([problem], torch.zeros(1, dtype=torch.long), torch.ones(1, len(response_ids)))
    pipeline.segment(batch, tokenizer, [response_ids], separator)
    pipeline.score_steps(batch, prm)
    n = int(batch.steps.num_steps[0])
    ends = batch.steps.step_ends[0, :n].tolist()
    if batch.step_scores is None:
        scores = [0.0] * n
    else:
        scores = [None if math.isnan(x) else float(x) for x in batch.step_scores[0]]
    return {STEP_REWARDS: json.dumps(scores), STEP_ENDS: json.dumps(ends), "pure_steps": n}


@register("pure")
class PureRewardManager(RewardManagerBase):
    """verl reward manager ``pure`` (select it with ``reward.reward_manager.name=pure``)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **kwargs):  # fmt: skip
        super().__init__(config, tokenizer, compute_score)
        self.compute_score = compute_score or default_compute_score
        self.settings = pure_settings(config)
        self._prm = None

    @property
    def prm(self):
        if self._prm is None and self.settings["reward"] != "vr":
            self._prm = load_prm(self.settings)  # once per reward worker, on first use
        return self._prm

    def verifiable_reward(self, item, problem: str, text: str) -> float | None:
        """verl's rule-based score on the prompts that carry ground truth (``vr_fraction`` of them)."""
        if self.settings["reward"] == "prm":
            return None
        truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        fraction = 1.0 if self.settings["reward"] == "vr" else float(self.settings["vr_fraction"])
        if truth in (None, "") or not pipeline.has_ground_truth(problem, fraction):
            return None
        result = self.compute_score(data_source=item.non_tensor_batch.get("data_source"), solution_str=text,
                                    ground_truth=truth, extra_info=item.non_tensor_batch.get("extra_info"))  # fmt: skip
        return float(result["score"] if isinstance(result, dict) else result)

    def score(self, item) -> dict:
        """The ``reward_extra_info`` of one response (a ``DataProtoItem``)."""
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        ids = responses[:length].tolist()
        problem = problem_text(item)
        info = step_info(self.tokenizer, self.prm, problem, ids, self.settings["separator"])
        vr = self.verifiable_reward(item, problem, self.tokenizer.decode(ids, skip_special_tokens=True))
        info[VR] = vr
        info["acc"] = float("nan") if vr is None else vr
        return info

    async def run_single(self, data) -> dict:
        item = data[-1:][0]  # for multi-sequence outputs, the last sequence (as verl's own managers)
        info = await self.loop.run_in_executor(None, lambda: self.score(item))
        return {"reward_score": 0.0, "reward_extra_info": info}
