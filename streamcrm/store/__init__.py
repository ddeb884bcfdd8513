"""Where customer state, latest scores and model checkpoints live: Redis
(:mod:`streamcrm.store.redis`; on a Redis Cluster, :mod:`streamcrm.store.redis_cluster`), or
an in-memory twin (:mod:`streamcrm.store.memory`), behind one protocol
(:mod:`streamcrm.store.base`); stored JSON is compressed by :mod:`streamcrm.store.codec`.

May import: the core and :mod:`streamcrm.errors`.
"""

from streamcrm.store.base import (
    AUDIT_MAX_LENGTH,
    KEY_VERSION,
    InputPosition,
    LedgerDue,
    OutboxRecord,
    PendingWrite,
    SaveResult,
    StateStore,
    audit_key,
    customer_key,
    due_key,
    erased_key,
    model_key,
    offsets_key,
    outbox_from_key,
    outbox_key,
    output_fingerprint,
    partition_of,
    partition_tag,
    v1_offsets_key,
)
from streamcrm.store.memory import InMemoryStateStore
from streamcrm.store.redis import RedisStateStore
from streamcrm.store.redis_cluster import RedisClusterStateStore

__all__ = [
    "AUDIT_MAX_LENGTH",
    "KEY_VERSION",
    "InMemoryStateStore",
    "InputPosition",
    "LedgerDue",
    "OutboxRecord",
    "PendingWrite",
    "RedisClusterStateStore",
    "RedisStateStore",
    "SaveResult",
    "StateStore",
    "audit_key",
    "customer_key",
    "due_key",
    "erased_key",
    "model_key",
    "offsets_key",
    "outbox_from_key",
    "outbox_key",
    "output_fingerprint",
    "partition_of",
    "partition_tag",
    "v1_offsets_key",
]
