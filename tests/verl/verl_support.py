"""What the verl plugin's tests share: verl's own trainer config composed by Hydra, and the ``pure_sync``
trainer's advantage step run on a batch held by a stand-in for verl's TransferQueue (the one piece of
verl that needs Ray), so that verl's own ``_compute_advantage`` (KL penalty in the reward included)
runs around the plugin's. Imports verl only when called: pytest imports this module for its doctests
in environments without verl too."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ["algorithm.adv_estimator=pure", "reward.reward_manager.name=pure", "trainer.v1.trainer_mode=pure_sync"]
"""The three settings that select the plugin's parts."""


def compose(*overrides: str):
    """verl's ``ppo_trainer`` config with Hydra overrides, as ``python -m verl.trainer.main_ppo`` builds it."""
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(overrides))


def pure(*purerl_overrides: str) -> list[str]:
    """purerl ``key=value`` overrides as verl's inline ones: ``+algorithm.pure.key=value``."""
    return [f"+algorithm.pure.{item}" for item in purerl_overrides]


class FakeTransferQueue:
    """verl's ``tq.kv_batch_get`` / ``kv_batch_put`` over rows held here: per-response tensors come back
    as jagged nested tensors and other values as a ``NonTensorStack``, as verl's TransferQueue returns them."""

    def __init__(self, rows: dict[str, list]):
        self.rows = rows
        self.put: dict[str, torch.Tensor] = {}

    def kv_batch_get(self, keys, partition_id, select_fields):
        from tensordict import NonTensorStack, TensorDict

        out = {}
        for name in select_fields:
            if name not in self.rows:
                continue
            values = self.rows[name]
            if isinstance(values[0], torch.Tensor):
                out[name] = torch.nested.as_nested_tensor(values, layout=torch.jagged)
            else:
                out[name] = NonTensorStack.from_list(values)
        return TensorDict(out, batch_size=len(keys))

    def kv_batch_put(self, keys, partition_id, fields):
        self.put.update({name: fields[name] for name in list(fields.keys())})  # a TensorDict iterates rows
        return None


class KVBatch:
    """The keys of a batch in the TransferQueue (verl's ``KVBatchMeta``)."""

    def __init__(self, n: int):
        self.keys = [f"uid{i}_0_0" for i in range(n)]
        self.partition_id = "train"

    def __len__(self) -> int:
        return len(self.keys)


def padded(nested: torch.Tensor, width: int) -> torch.Tensor:
    """A jagged nested tensor as a (B, width) tensor, 0 after each row."""
    rows = nested.unbind()
    return torch.stack([torch.nn.functional.pad(r, (0, width - r.shape[0])) for r in rows])


def layout_info(step_rewards, step_ends, vr) -> dict:
    """One response's ``reward_extra_info`` as the ``pure`` reward manager writes it."""
    return {"pure_step_rewards": json.dumps(step_rewards), "pure_step_ends": json.dumps(step_ends), "pure_vr": vr}


def pure_sync_advantages(monkeypatch, config, infos, lengths, uids, logprobs=None, ref_logprobs=None):
    """The advantages ``PureTrainerSync`` writes back for a batch: the trainer built from ``config`` (its
    start-up checks run), its ``_compute_advantage`` (verl's, around the plugin's) on responses of
    ``lengths`` with the reward manager's ``infos``; log-probs (B, T) for verl's KL penalty."""
    from verl.trainer.ppo.v1 import trainer_base

    from purerl.integrations.verl.trainer import PureTrainerSync

    if str(config.trainer.default_local_dir).startswith("checkpoints/"):  # verl's default: under the working folder
        config.trainer.default_local_dir = tempfile.mkdtemp(prefix="purerl-verl-")  # the monitor's metrics.jsonl
    trainer = PureTrainerSync(config)
    width = max(lengths)
    rows = {
        "uid": list(uids),
        "response_mask": [torch.ones(n) for n in lengths],
        "rm_scores": [torch.zeros(n) for n in lengths],  # the pure reward manager's scalar is 0
        "extra_fields": [{"reward_extra_info": info} for info in infos],
    }
    for name, values in (("old_log_probs", logprobs), ("ref_log_prob", ref_logprobs)):
        if values is not None:
            rows[name] = [values[i, :n] for i, n in enumerate(lengths)]
    queue = FakeTransferQueue(rows)
    monkeypatch.setattr(trainer_base, "tq", queue)
    trainer._compute_advantage(KVBatch(len(lengths)), {})
    return padded(queue.put["advantages"], width), trainer
