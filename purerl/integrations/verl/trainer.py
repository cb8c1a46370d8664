"""The ``pure_sync`` trainer mode: verl's synchronous PPO trainer, handing the ``pure`` estimator the
step layout the ``pure`` reward manager measured.

Everything else is verl's ``sync`` mode (the same replay buffer, refill and weight updates: the mode
reports itself as ``sync`` to verl's own checks). With another advantage estimator it is ``sync``.
"""

from __future__ import annotations

from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from purerl.integrations.verl.estimator import STEP_ENDS, credit_settings, layout_from_infos, step_layout
from purerl.integrations.verl.reward import check_plugin_config, pure_settings

MODE = "pure_sync"


@register_trainer(MODE)
class PureTrainerSync(PPOTrainerSync):
    """``trainer.v1.trainer_mode=pure_sync`` with ``algorithm.adv_estimator=pure``."""

    def __init__(self, config, *args, **kwargs):
        check_plugin_config(config)  # the driver says what is wrong before any worker starts
        if config.algorithm.adv_estimator == "pure":
            credit_settings(config.algorithm, int(config.data.max_response_length))
            pure_settings(config)
        super().__init__(config, *args, **kwargs)

    @property
    def trainer_mode(self) -> str:
        return self._trainer_mode

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self._trainer_mode = "sync" if value == MODE else value  # verl's checks read "sync"

    def _compute_advantage(self, batch, metrics: dict):
        if self.config.algorithm.adv_estimator != "pure":
            return super()._compute_advantage(batch, metrics)
        data = trainer_base.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                            select_fields=["extra_fields"])  # fmt: skip
        fields = data.pop("extra_fields").tolist()
        infos = [(f.get("reward_extra_info") or {}) if isinstance(f, dict) else {} for f in fields]
        if not any(STEP_ENDS in info for info in infos):
            raise RuntimeError("no response carries the pure reward manager's step layout (reward_extra_info)")
        layout = layout_from_infos(infos)
        layout.max_len = int(self.config.data.max_response_length)
        with step_layout(layout):
            return super()._compute_advantage(batch, metrics)
