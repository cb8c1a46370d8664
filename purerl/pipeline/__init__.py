"""The process-reward pipeline every engine calls after sampling.

Token ids -> steps -> PRM and verifiable rewards -> credit -> metrics (:mod:`purerl.pipeline.rewards`)."""
