"""purerl's own RL trainer: the loop, its builders, checkpoints, run control."""
