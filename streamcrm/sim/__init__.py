"""Simulated customer histories with known truth (``simulator``), and the churn oracle that
knows what each simulated customer will do (``oracle``).

May import: the core and :mod:`streamcrm.errors`.
"""
