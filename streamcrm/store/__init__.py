"""Where customer state, latest scores and model checkpoints live: Redis
(:mod:`streamcrm.store.redis`), or an in-memory twin (:mod:`streamcrm.store.memory`), behind
one protocol (:mod:`streamcrm.store.base`); stored JSON is deflated by
:mod:`streamcrm.store.codec`.

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
)
from streamcrm.store.memory import InMemoryStateStore
from streamcrm.store.redis import RedisStateStore

__all__ = [
    "AUDIT_MAX_LENGTH",
    "KEY_VERSION",
    "InMemoryStateStore",
    "InputPosition",
    "LedgerDue",
    "OutboxRecord",
    "PendingWrite",
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
]
