"""purerl inside engines people already run: TRL (``purerl.integrations.trl``). Each integration calls
the process-reward pipeline (:mod:`purerl.pipeline.rewards`) that ``purerl train`` calls, so the credit
is the same; see docs/scaling.md."""
