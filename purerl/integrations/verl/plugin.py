"""The ``verl.plugins`` entry point of purerl: importing it registers the advantage estimator ``pure``,
the reward manager ``pure`` and the trainer mode ``pure_sync`` with verl (verl imports every
``verl.plugins`` entry point when it is imported, in the driver and in every Ray worker)."""

from __future__ import annotations

import logging

from verl.trainer.ppo.core_algos import register_adv_est

from purerl.integrations.verl import reward  # noqa: F401  (registers the reward manager "pure")
from purerl.integrations.verl.estimator import pure_advantage

log = logging.getLogger(__name__)

register_adv_est("pure")(pure_advantage)

try:  # the v1 trainers need TransferQueue (verl's verl-core extra); the other two parts do not
    from purerl.integrations.verl import trainer  # noqa: F401  (registers the trainer mode "pure_sync")
except ImportError as err:  # pragma: no cover - depends on the environment
    log.warning("purerl: verl trainer mode pure_sync not registered (%s); pip install 'purerl[verl]'", err)
