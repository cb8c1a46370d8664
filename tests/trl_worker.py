"""PURE in TRL for tests/test_trl.py (not a test itself).

``record OUT``: train one step (under ``accelerate launch`` with any number of processes) and save each
process's batch (prompt and completion ids, advantages) and, from rank 0, the weights after the step.
``replay OUT``: one process trains one step on the completions ``record`` sampled (in the same global
order, through TRL's ``rollout_func``) with the same global batch, and saves the same.
"""

from __future__ import annotations

import os
import sys

import torch
from trl import TrlParser

from purerl.integrations.trl import PureGRPOConfig, PureGRPOTrainer, PureScriptArguments
from purerl.integrations.trl.__main__ import build_trainer

GLOBAL_BATCH = 12  # completions per step: 3 prompts x K = 4; on two processes of 6, prompt 2 straddles them
ARGS = [
    "--max_steps", "1", "--gradient_accumulation_steps", "1", "--num_generations", "4", "--max_completion_length",
    "32", "--learning_rate", "1e-3", "--beta", "0.0", "--logging_steps", "1", "--save_strategy", "no",
    "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false", "--seed", "0",
    "--credit_mode", "soft_min", "--vr_fraction", "0.5", "--num_problems", "64", "--use_cpu", "true",
]  # fmt: skip


class Recording(PureGRPOTrainer):
    """Keeps what every generation round produced on this process."""

    records: list

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        prompt_ids = [row[m.bool()].tolist() for row, m in zip(output["prompt_ids"], output["prompt_mask"])]
        completion_ids = [row[m.bool()].tolist() for row, m in zip(output["completion_ids"], output["completion_mask"])]
        self.records.append({"prompts": [x["prompt"] for x in inputs], "prompt_ids": prompt_ids,
                             "completion_ids": completion_ids, "advantages": output["advantages"].cpu()})  # fmt: skip
        return output


def _config(out: str, processes: int):
    per_device = GLOBAL_BATCH // processes
    argv = [*ARGS, "--output_dir", out, "--per_device_train_batch_size", str(per_device)]
    return TrlParser((PureScriptArguments, PureGRPOConfig)).parse_args_and_config(args=argv)


def _save(trainer: Recording, out: str, name: str) -> None:
    rank = trainer.accelerator.process_index
    torch.save(trainer.records, os.path.join(out, f"{name}-rank{rank}.pt"))
    if rank == 0:
        model = trainer.accelerator.unwrap_model(trainer.model)
        torch.save(
            {k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(out, f"{name}-weights.pt")
        )


def record(out: str) -> None:
    script, args = _config(out, int(os.environ.get("WORLD_SIZE", "1")))
    trainer = build_trainer(script, args, trainer_class=Recording)
    trainer.records = []
    trainer.train()
    _save(trainer, out, "record")


def replay(out: str) -> None:
    ranks = sorted(f for f in os.listdir(out) if f.startswith("record-rank"))
    recorded = [torch.load(os.path.join(out, f)) for f in ranks]
    rounds = [[r for per_rank in recorded for r in [per_rank[i]]] for i in range(len(recorded[0]))]

    def rollout_func(prompts, trainer):
        parts = rounds[len(trainer.records)]
        assert prompts == [p for part in parts for p in part["prompts"]], "replay sees another global batch"
        return {"prompt_ids": [i for part in parts for i in part["prompt_ids"]],
                "completion_ids": [i for part in parts for i in part["completion_ids"]], "logprobs": None}  # fmt: skip

    script, args = _config(out, 1)
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    trainer = build_trainer(script, args, trainer_class=Recording, rollout_func=rollout_func)
    trainer.records = []
    trainer.train()
    _save(trainer, out, "replay")


if __name__ == "__main__":
    {"record": record, "replay": replay}[sys.argv[1]](sys.argv[2])


def initial_weights() -> dict:
    """The policy's weights before training (the built-in warm start)."""
    from purerl.config import load_config
    from purerl.models.builtin import builtin_policy_path
    from purerl.models.loading import load_policy

    model, _ = load_policy(builtin_policy_path(load_config()))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
