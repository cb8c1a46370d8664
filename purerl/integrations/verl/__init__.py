"""PURE as a verl plugin: an advantage estimator ``pure``, a reward manager ``pure`` and a trainer mode
``pure_sync``, registered when verl imports its ``verl.plugins`` entry points (``purerl[verl]``).

Everything computes through :mod:`purerl.pipeline.rewards`, the pipeline ``purerl train`` and the TRL
integration use; docs/scaling.md has the config, the paper's command and what was tested.
"""
