"""Plumbing to the services streamcrm runs on: Kafka clients and topics (``kafka``), the
connection options and start-up check for Kafka and Redis (``connections``), embedded Tansu
and redis-server for local runs and tests, and settings pointed at them (``embedded``), and
processes started with a log file, the worker among them (``processes``).

May import: the core, the store, :mod:`streamcrm.settings` and :mod:`streamcrm.errors`.
"""
