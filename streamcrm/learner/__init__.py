"""``streamcrm learner``: the shared learner of a worker group as a process of its own.

- :mod:`streamcrm.learner.resume`: where reading resumes after a restart (pure), and why the
  offset lives in the checkpoint.
- :mod:`streamcrm.learner.learner`: the models and their position, learned and checkpointed
  together (no Kafka).
- :mod:`streamcrm.learner.process`: the Kafka consumer and the loop around them.

Scoring workers run without their in-worker learner under ``STREAMCRM_LEARNER=process``
(docs/learner.md). May import: the worker layer and everything below it; only the
command line (and the benchmarks) import it.
"""
