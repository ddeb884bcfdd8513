"""The ``streamcrm`` command (``main``) and what its subcommands need beyond the worker:
the demo, ``status``, ``replay``, ``deadletter``, ``evaluate``, ``schemas`` and progress
reporting.

May import: everything but the benchmarks (``streamcrm bench`` loads them when it runs).
"""
