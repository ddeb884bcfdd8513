"""The pure scoring core: no I/O, no clock, no Kafka, Redis or Faust.

Input events and their decoding (``events``), the output records (``records``), customer
state and its transitions (``state``), features, churn labels, the business scores, the
alert rules and the one scoring step that ties them together (``scoring``), plus the keyed
hashing used for erasure and pseudonyms (``privacy``) and population summaries.

May import: :mod:`streamcrm.errors` and :mod:`streamcrm.models`. Nothing else of streamcrm.
"""
