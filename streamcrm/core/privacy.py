"""Erasure (GDPR art. 17 / CCPA) without keeping personal data: keyed subject hashes.

An erasure deletes the customer's state (with its pending training snapshots), cached score
and due-index entry, removes them from the shared repeat-buying sample, emits a tombstone
on ``crm.scores`` and writes an audit record. It also blocks the customer's later events
(dropped and counted, never dead-lettered: a dead letter would keep their data) until a
``consent`` event is recorded. Neither the block list nor the audit trail holds the customer
id: both use the *subject hash* HMAC-SHA256(privacy key, customer id), which cannot be turned
back into the id without the key.

What erasure cannot take back: what the shared models already learned from the customer's
past snapshots (a few gradient steps in the churn model's weights, a nudge of a k-means
centre, one observation in the population quantiles). None of it is per-customer or
recoverable as such; ``docs/privacy.md`` says so for data-protection records.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

UNKEYED_PREFIX = b"streamcrm-unkeyed-privacy-key:"
"""Without a configured key, the namespace stands in: the hash then only hides ids that are
hard to guess. Production sets ``STREAMCRM_PRIVACY_KEY``."""


def subject_hash(key: bytes, customer_id: str) -> str:
    """The keyed, irreversible name of a customer in the block list and audit trail.

    >>> subject_hash(b"k", "cust-1") == subject_hash(b"k", "cust-1") != subject_hash(b"j", "cust-1")
    True
    >>> len(subject_hash(b"k", "cust-1"))
    32
    """
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonym(key: bytes, customer_id: str) -> str:
    """The id streamcrm keeps for a customer when ids are pseudonymised at the edge:
    ``p-`` + HMAC-SHA256(key, "pseudonym:" + id), 128 bits in hex. Stable for a key, so one
    customer's events still meet; not the subject hash (a separate domain of the same key).

    >>> pseudonym(b"k", "cust-1") == pseudonym(b"k", "cust-1")
    True
    >>> pseudonym(b"k", "cust-1").startswith("p-"), len(pseudonym(b"k", "cust-1"))
    (True, 34)
    """
    digest = hmac.new(key, b"pseudonym:" + customer_id.encode(), hashlib.sha256)
    return "p-" + digest.hexdigest()[:32]


def default_privacy_key(namespace: str) -> bytes:
    """The stand-in key when none is configured (see ``UNKEYED_PREFIX``)."""
    return UNKEYED_PREFIX + namespace.encode()


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure deleted (counts only: nothing personal)."""

    subject: str
    state_deleted: bool
    already_applied: bool = False
    store_behind: bool = False
    """Nothing done: the store lost writes of the request's topic partition (see
    ``SaveResult.STATE_BEHIND``), which are to be applied again first."""
