"""The Faust worker: the app's wiring (``app``), the pipeline that is the one seam between the
core and I/O (``pipeline``), the outbox publisher, the HTTP views, topic metrics and the
dashboard.

May import: the core, the models, the store, the services, :mod:`streamcrm.settings` and
:mod:`streamcrm.errors`; never the command line or the benchmarks.
"""
