"""The ``streamcrm`` command (``main``) and what its subcommands need beyond the worker:
the demo, ``status``, ``replay``, ``deadletter``, ``evaluate``, ``schemas`` and progress
reporting.

May import: everything. The command line and the benchmarks are one layer, the applications
on top: ``streamcrm bench`` runs the benchmarks, and the demo reports the churn oracle's AUC
from :mod:`streamcrm.bench.churn`; neither imports the other in a cycle (the architecture test
checks).
"""
