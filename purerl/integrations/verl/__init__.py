"""PURE as a verl plugin: an advantage estimator ``pure``, a reward manager ``pure`` and a trainer mode
``pure_sync``, registered when verl imports its ``verl.plugins`` entry points (``purerl[verl]``).

All three read the same purerl YAML as ``purerl train``, named by ``algorithm.pure.config`` with purerl
keys inline under ``algorithm.pure`` as overrides (:mod:`purerl.integrations.verl.config`), and compute
through the pipeline every route uses (:mod:`purerl.pipeline`); verl owns sampling, the policy, the
optimizer and the KL penalty, and the trainer refuses a purerl setting for them that disagrees.
"""
