"""The ``pure`` reward manager for verl's reward loop: steps, PRM scores and verifiable rewards.

For each response it decodes the token ids with the policy tokenizer, splits them into steps located
in those tokens, scores the steps with a purerl PRM adapter and, on the prompts that carry ground
truth (a ``reward.pure.vr_fraction`` share of them, chosen as ``purerl train`` chooses), grades the
answer with verl's rule-based scorer. verl 0.9's reward loop carries one scalar per response, so the
step layout travels in ``reward_extra_info`` (JSON strings) to the ``pure_sync`` trainer, which hands
it to the ``pure`` estimator; the scalar itself is 0.
"""

from __future__ import annotations

import inspect
import json
import math
import threading

import torch
from omegaconf import OmegaConf
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.utils.reward_score import default_compute_score

from purerl.integrations.verl.estimator import STEP_ENDS, STEP_REWARDS, VR
from purerl.pipeline import rewards as pipeline
from purerl.pipeline.rewards import RewardBatch

DEFAULTS = {"reward": "prm+vr", "vr_fraction": 0.1, "separator": "\n\n", "prm_kind": "token_classification",
            "prm_path": None, "prm_dtype": "float32", "prm_device": "cpu", "prm_score_map": "none",
            "prm_separator": "\n", "prm_trust_remote_code": False}  # fmt: skip
"""``reward.pure.*`` keys and their defaults."""


def pure_settings(config) -> dict:
    """``reward.pure`` of a verl config, over :data:`DEFAULTS`; unknown keys and values are an error."""
    from purerl.config.validation import REWARDS, SCORE_MAPS
    from purerl.registry import PRMS

    reward = config.get("reward") if config is not None else None
    given = dict((reward.get("pure") if reward is not None else None) or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"reward.pure: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **given}
    for key, allowed in (("reward", REWARDS), ("prm_kind", PRMS), ("prm_score_map", SCORE_MAPS)):
        if settings[key] not in allowed:
            raise ValueError(f"reward.pure.{key}={settings[key]!r}: choose one of {sorted(allowed)}")
    if not 0.0 <= float(settings["vr_fraction"]) <= 1.0:
        raise ValueError(f"reward.pure.vr_fraction must lie in [0, 1], got {settings['vr_fraction']}")
    return settings


PLUGIN_SETTINGS = {"algorithm.adv_estimator": "pure", "reward.reward_manager.name": "pure",
                   "trainer.v1.trainer_mode": "pure_sync"}  # fmt: skip
"""The three settings that select the plugin's parts; they work only together."""


def check_plugin_config(config) -> None:
    """Refuse a verl config that selects some of the plugin's parts but not all (:data:`PLUGIN_SETTINGS`)."""
    given = {key: OmegaConf.select(config, key) for key in PLUGIN_SETTINGS}
    if given != PLUGIN_SETTINGS and any(given[k] == v for k, v in PLUGIN_SETTINGS.items()):
        wanted = ", ".join(f"{k}={v}" for k, v in PLUGIN_SETTINGS.items())
        got = ", ".join(f"{k}={v}" for k, v in given.items())
        raise ValueError(f"purerl's verl plugin needs all of {wanted}; got {got}")


def load_prm(settings: dict):
    """The PRM adapter ``reward.pure.prm_*`` names (the built-in PRM without a path)."""
    if settings["reward"] == "vr":
        return None
    from purerl.training.builders import engine_prm

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
        check_plugin_config(config)
        self.compute_score = compute_score or default_compute_score
        self.settings = pure_settings(config)
        self._prm = None
        self._lock = threading.Lock()  # one PRM per worker, one scoring at a time

    @property
    def prm(self):
        with self._lock:
            if self._prm is None and self.settings["reward"] != "vr":
                self._prm = load_prm(self.settings)  # once per reward worker, on first use
        return self._prm

    def steps(self, item) -> tuple[dict, str, str]:
        """The step layout of one response (a ``DataProtoItem``), its problem and its decoded text."""
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        ids = responses[:length].tolist()
        problem = problem_text(item)
        prm = self.prm
        with self._lock:
            info = step_info(self.tokenizer, prm, problem, ids, self.settings["separator"])
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
        fraction = 1.0 if self.settings["reward"] == "vr" else float(self.settings["vr_fraction"])
        use_vr = self.settings["reward"] != "prm" and pipeline.has_ground_truth(problem, fraction)
        info[VR] = acc if use_vr else None  # the verifiable reward: ground truth on vr_fraction of the prompts
        info["acc"] = acc
        return {"reward_score": 0.0, "reward_extra_info": info}
