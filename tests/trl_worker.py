"""PURE in TRL for tests/test_trl.py (not a test itself).

``record OUT``: train one step (under ``accelerate launch`` with any number of processes) with the paper's
default credit (soft-min, whitening, KL 1e-3 k3 in the reward) and save each process's rounds (prompt and
completion ids, log-probs, advantages) and, from rank 0, the weights after the step.
``replay OUT``: one process trains one step on the completions ``record`` sampled (in the same global
order, through TRL's ``rollout_func``) with the same global batch, and saves the same.
"""

from __future__ import annotations

import os
import sys

import torch

from purerl.integrations.trl import PureGRPOTrainer, build_trainer, grpo_config, load_route_config

OVERRIDES = [
    "rollout.prompts_per_step=3", "rollout.k=4", "rollout.max_new_tokens=32", "algo.lr=1e-3", "algo.minibatches=1",
    "algo.vr_fraction=0.5", "run.steps=1", "run.seed=0", "run.tensorboard=false",
]  # fmt: skip
"""12 completions a step (3 prompts x K = 4; on two processes of 6, prompt 2 straddles them), one optimizer
step a round; everything else (credit, whitening, KL in the reward) the paper's defaults."""


class Recording(PureGRPOTrainer):
    """Keeps what PURE's credit saw and gave in every generation round on this process."""

    records: list

    def pure_credit(self, inputs, output):
        batch = super().pure_credit(inputs, output)
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(output["prompt_ids"], output["prompt_mask"])]
        completion_ids = [row[m.bool()].tolist() for row, m in zip(output["completion_ids"], output["completion_mask"])]
        as_cpu = {k: None if v is None else v.detach().cpu()
                  for k, v in (("logprobs", batch.logprobs), ("ref_logprobs", batch.ref_logprobs))}  # fmt: skip
        self.records.append({"prompts": [x["prompt"] for x in inputs], "problems": [x["problem"] for x in inputs],
                             "prompt_ids": prompt_ids, "completion_ids": completion_ids, **as_cpu,
                             "advantages": batch.advantages.cpu()})  # fmt: skip
        return batch


def config(out: str, extra: list[str] | tuple[str, ...] = ()):
    """``(cfg, args)`` of :data:`OVERRIDES` plus ``extra``, writing to ``out``."""
    cfg, trl = load_route_config(None, [*OVERRIDES, f"run.out_dir={out}", *extra])
    return cfg, grpo_config(cfg, trl)


def recording_trainer(out: str, extra: list[str] | tuple[str, ...] = (), **kwargs) -> Recording:
    cfg, args = config(out, extra)
    trainer = build_trainer(cfg, args, trainer_class=Recording, **kwargs)
    trainer.records = []
    return trainer


def _save(trainer: Recording, out: str, name: str) -> None:
    rank = trainer.accelerator.process_index
    torch.save(trainer.records, os.path.join(out, f"{name}-rank{rank}.pt"))
    if rank == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(weights, os.path.join(out, f"{name}-weights.pt"))


def record(out: str) -> None:
    trainer = recording_trainer(out)
    trainer.train()
    _save(trainer, out, "record")


def replay(out: str) -> None:
    ranks = sorted(f for f in os.listdir(out) if f.startswith("record-rank"))
    recorded = [torch.load(os.path.join(out, f)) for f in ranks]
    rounds = [[per_rank[i] for per_rank in recorded] for i in range(len(recorded[0]))]

    def rollout_func(prompts, trainer):
        parts = rounds[len(trainer.records)]
        assert prompts == [p for part in parts for p in part["prompts"]], "replay sees another global batch"
        return {"prompt_ids": [i for part in parts for i in part["prompt_ids"]],
                "completion_ids": [i for part in parts for i in part["completion_ids"]], "logprobs": None}  # fmt: skip

    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    trainer = recording_trainer(out, rollout_func=rollout_func)
    trainer.train()
    _save(trainer, out, "replay")


def initial_weights() -> dict:
    """The policy's weights before training (the built-in warm start)."""
    from purerl.config import load_config
    from purerl.models.builtin import builtin_policy_path
    from purerl.models.loading import load_policy

    model, _ = load_policy(builtin_policy_path(load_config()))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    {"record": record, "replay": replay}[sys.argv[1]](sys.argv[2])
