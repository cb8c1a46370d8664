"""The ``pure_sync`` trainer mode: verl's synchronous PPO trainer, handing the ``pure`` estimator the
step layout the ``pure`` reward manager measured, with N = ``data.max_response_length``.

Its start-up, in the driver before any worker starts, reads the purerl config under ``algorithm.pure``
(:mod:`purerl.integrations.verl.config`), refuses a purerl key given explicitly that disagrees with
verl's own key for it (sampling, the policy, the optimizer, the KL) in one line naming the verl key,
and logs one line saying what runs. Each step it runs purerl's hacking detectors on what the reward
manager measured (:mod:`purerl.integrations.verl.monitoring`): ``pure/...`` metrics and flags in verl's
tracker, ``metrics.jsonl`` in ``trainer.default_local_dir``, and a guard's ``stop`` (or ``rollback``,
which verl cannot do) ends the run after the step. Everything else is verl's ``sync`` mode (the same replay buffer,
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
from purerl.integrations.verl.monitoring import VerlWatch, heldout_row, info_metrics

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
        self.pure_watch = None
        if config.algorithm.adv_estimator == "pure":
            self.pure_watch = VerlWatch(read_pure(config).cfg, config.trainer.get("default_local_dir"))
        super().__init__(config, *args, **kwargs)

    def on_step_end(self):
        super().on_step_end()
        if self.pure_watch is not None and self.pure_watch.stop_reason:  # verl's loop ends after this step
            log.warning("%s; verl's last checkpoint is under trainer.default_local_dir", self.pure_watch.stop_reason)
            self.total_training_steps = self.global_steps

    def _validate(self, *args, **kwargs):
        metrics = super()._validate(*args, **kwargs)
        if self.pure_watch is not None:
            row = heldout_row(metrics or {}, len(getattr(self, "val_dataset", None) or []))
            if row:
                self.pure_watch.observe(getattr(self, "global_steps", 0), row, metrics)
        return metrics

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
                                            select_fields=["extra_fields", "uid"])  # fmt: skip
        fields = [getattr(f, "data", f) for f in data.pop("extra_fields").tolist()]
        infos = [(f.get("reward_extra_info") or {}) if isinstance(f, dict) else {} for f in fields]
        if not any(STEP_ENDS in info for info in infos):
            raise RuntimeError("no response carries the pure reward manager's step layout (reward_extra_info)")
        if self.pure_watch is not None:
            uids = None
            if "uid" in data.keys():  # noqa: SIM118 (a TensorDict has no `in`)
                value = data.pop("uid")
                uids = [getattr(u, "data", u) for u in (value.tolist() if hasattr(value, "tolist") else value)]
            row = info_metrics(infos, uids, with_prm=self.pure_watch.cfg.algo.reward != "vr")
            self.pure_watch.observe(getattr(self, "global_steps", 0), row, metrics)
        layout = layout_from_infos(infos)
        layout.max_len = int(self.config.data.max_response_length)  # N: verl pads a batch only to its longest
        with step_layout(layout):
            return super()._compute_advantage(batch, metrics)
