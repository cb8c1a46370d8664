"""The ``pure_sync`` trainer mode: verl's synchronous PPO trainer, handing the ``pure`` estimator the
step layout the ``pure`` reward manager measured, with N = ``data.max_response_length``.

Its start-up, in the driver before any worker starts, reads the purerl config under ``algorithm.pure``
(:mod:`purerl.integrations.verl.config`), refuses a purerl key given explicitly that disagrees with
verl's own key for it (sampling, the policy, the optimizer, the KL) in one line naming the verl key,
and logs one line saying what runs. Everything else is verl's ``sync`` mode (the same replay buffer,
refill and weight updates: the mode reports itself as ``sync`` to verl's own checks). With another
advantage estimator it is ``sync``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from purerl.integrations.verl.config import check_engine_settings, check_plugin_config, read_pure, startup_line
from purerl.integrations.verl.estimator import STEP_ENDS, layout_from_infos, step_layout

MODE = "pure_sync"
log = logging.getLogger("purerl.integrations.verl")


def start_up(config) -> str | None:
    """The driver's checks (:func:`check_plugin_config`, the purerl config, the settings verl owns);
    returns the start-up line (None when the run is not the plugin's). A relative
    ``algorithm.pure.config`` becomes absolute, so that workers started elsewhere read the same file."""
    check_plugin_config(config)
    if config.algorithm.adv_estimator != "pure":
        return None
    pure = read_pure(config)
    check_engine_settings(pure, config)
    line, differs = startup_line(pure, config)
    (log.warning if differs else log.info)(line)
    if pure.path is not None and not Path(pure.path).is_absolute():
        config.algorithm.pure.config = str(Path(pure.path).resolve())
    return line


@register_trainer(MODE)
class PureTrainerSync(PPOTrainerSync):
    """``trainer.v1.trainer_mode=pure_sync`` with ``algorithm.adv_estimator=pure``."""

    def __init__(self, config, *args, **kwargs):
        self.startup_line = start_up(config)  # the driver says what is wrong before any worker starts
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
        fields = [getattr(f, "data", f) for f in data.pop("extra_fields").tolist()]
        infos = [(f.get("reward_extra_info") or {}) if isinstance(f, dict) else {} for f in fields]
        if not any(STEP_ENDS in info for info in infos):
            raise RuntimeError("no response carries the pure reward manager's step layout (reward_extra_info)")
        layout = layout_from_infos(infos)
        layout.max_len = int(self.config.data.max_response_length)  # N: verl pads a batch only to its longest
        with step_layout(layout):
            return super()._compute_advantage(batch, metrics)
