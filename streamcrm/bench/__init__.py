"""``streamcrm bench`` and the other benchmarks: commands that measure and print figures
(the pipeline against its ceiling and baselines, the churn models, the soak, the Faust and
Quix Streams pass-throughs). Never timed assertions.

May import: anything of streamcrm.
"""
