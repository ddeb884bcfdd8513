"""One contract for every ``StateStore``: the in-memory twin and the real Redis store.

The Redis variant runs against the redis-server the test session starts (see
``tests/conftest.py``), each test under its own namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from aiokafka.partitioner import DefaultPartitioner
from redis.crc import key_slot

from streamcrm.core.events import FeedbackEvent, PurchaseEvent
from streamcrm.core.records import CustomerScore
from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.core.state import CustomerState
from streamcrm.errors import ConfigurationError, StoreUnavailableError
from streamcrm.models import ModelBundle
from streamcrm.services.connections import check_redis
from streamcrm.services.embedded import EmbeddedServices, free_port
from streamcrm.settings import Settings
from streamcrm.store import (
    InMemoryStateStore,
    InputPosition,
    LedgerDue,
    OutboxRecord,
    PendingWrite,
    RedisClusterStateStore,
    RedisStateStore,
    SaveResult,
    StateStore,
)
from streamcrm.store.base import (
    audit_key,
    campaigns_key,
    customer_key,
    due_key,
    erased_key,
    model_key,
    offsets_key,
    outbox_from_key,
    outbox_key,
    partition_of,
)
from streamcrm.store.codec import VERSION_3, unpack
from tests.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["in_memory", "redis", "redis_cluster"])
def store(request: pytest.FixtureRequest) -> StateStore:
    """Each contract test runs once per implementation: the twin, one Redis, a Redis Cluster
    (three masters, a replica each)."""
    if request.param == "in_memory":
        return InMemoryStateStore()
    redis_store: RedisStateStore = request.getfixturevalue(f"{request.param}_store")
    return redis_store


@pytest.fixture
async def neighbour(
    store: StateStore, request: pytest.FixtureRequest, unique_name: str
) -> AsyncIterator[StateStore]:
    """A second store of the same kind under another namespace."""
    if isinstance(store, InMemoryStateStore):
        yield InMemoryStateStore()
        return
    if isinstance(store, RedisClusterStateStore):
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        other: RedisStateStore = RedisClusterStateStore.from_url(
            cluster.url, f"{unique_name}-other"
        )
    else:
        services: EmbeddedServices = request.getfixturevalue("services")
        other = RedisStateStore(aioredis.Redis.from_url(services.redis_url), f"{unique_name}-other")
    yield other
    await other.close()


def scored(customer_id: str = "c1", day: float = 0.0) -> tuple[CustomerState, CustomerScore]:
    """A real state and score after one purchase and one rating."""
    models, config = ModelBundle(), ScoringConfig()
    at = T0 + timedelta(days=day)
    first = score_event(
        None,
        PurchaseEvent(
            event_id=f"p-{customer_id}-{day}",
            customer_id=customer_id,
            order_id="o1",
            occurred_at=at,
            amount=42.5,
            items=2,
            channel="store",
            cost=20.0,
        ),
        models,
        config,
    )
    second = score_event(
        first.state,
        FeedbackEvent(
            event_id=f"f-{customer_id}-{day}",
            customer_id=customer_id,
            occurred_at=at + timedelta(hours=5),
            rating=9,
            scale="nps",
            category="brand",
        ),
        models,
        config,
    )
    assert second.score is not None
    return second.state, second.score


async def test_loading_a_missing_customer_gives_none(store: StateStore) -> None:
    assert await store.load("nobody") is None
    assert await store.load_score("nobody") is None


async def test_saved_state_and_score_load_back_equal(store: StateStore) -> None:
    state, score = scored()

    await store.save(state, score)

    assert await store.load("c1") == state
    assert await store.load_score("c1") == score


async def test_saving_again_overwrites_state_and_score(store: StateStore) -> None:
    old_state, old_score = scored(day=0)
    new_state, new_score = scored(day=30)
    await store.save(old_state, old_score)

    await store.save(new_state, new_score)

    assert await store.load("c1") == new_state
    assert await store.load_score("c1") == new_score


async def test_a_save_at_or_below_the_offset_mark_writes_nothing(store: StateStore) -> None:
    old_state, old_score = scored(day=0)
    new_state, new_score = scored(day=30)
    at = InputPosition("crm.purchases", "id-1", partition=1, offset=10)
    assert await store.save(old_state, old_score, LedgerDue(1, None), at)

    replayed = await store.save(new_state, new_score, LedgerDue(1, None), at)
    older = await store.save(
        new_state, new_score, None, InputPosition("crm.purchases", "id-1", 1, 9)
    )

    assert (replayed, older) == (False, False)
    assert await store.load("c1") == old_state and await store.load_score("c1") == old_score
    assert await store.applied_offset(at) == 10


async def test_offset_marks_are_kept_per_topic_id_and_partition(store: StateStore) -> None:
    state, score = scored()
    assert await store.save(state, score, None, InputPosition("crm.purchases", "id-1", 0, 50))

    assert await store.save(state, score, None, InputPosition("crm.purchases", "id-1", 1, 0))
    assert await store.save(state, score, None, InputPosition("crm.purchases", "id-2", 0, 0))
    assert await store.save(state, score, None, InputPosition("crm.feedback", "id-1", 0, 0))
    assert await store.save(state, score)  # no position: an unguarded write (sweeps, tests)
    assert await store.applied_offset(InputPosition("crm.purchases", "id-1", 0, 0)) == 50
    assert await store.applied_offset(InputPosition("crm.purchases", None, 0, 0)) is None


async def test_a_batch_of_writes_is_made_in_order_in_one_call(store: StateStore) -> None:
    (a1, s1), (a2, s2), (b1, t1) = scored("a"), scored("a", day=2), scored("b")
    at = lambda offset: InputPosition("crm.purchases", "id-1", 0, offset)  # noqa: E731

    results = await store.save_batch(
        [
            PendingWrite(at(0), a1, s1, LedgerDue(0, T0)),
            PendingWrite(at(1)),  # a dead letter: the mark alone
            PendingWrite(at(2), b1, t1),
            PendingWrite(at(3), a2, s2, LedgerDue(0, None)),
        ]
    )

    assert results == [SaveResult.APPLIED] * 4
    assert await store.load_many(["a", "b", "nobody"]) == {"a": a2, "b": b1, "nobody": None}
    assert await store.load_score("a") == s2 and await store.applied_offset(at(0)) == 3
    assert await store.due_customers(0, T0 + timedelta(days=1), 10) == []


async def test_a_batch_stops_at_its_first_refused_write(store: StateStore) -> None:
    (a1, s1), (b1, t1), (c1, u1) = scored("a"), scored("b"), scored("c")
    at = lambda offset: InputPosition("crm.purchases", "id-1", 0, offset)  # noqa: E731
    assert await store.save(a1, s1, None, at(5))

    results = await store.save_batch(
        [PendingWrite(at(6), b1, t1), PendingWrite(at(5), a1, s1), PendingWrite(at(7), c1, u1)]
    )

    assert results == [SaveResult.APPLIED, SaveResult.ALREADY_APPLIED]
    assert await store.load("b") == b1 and await store.load("c") is None
    assert await store.applied_offset(at(0)) == 6
    behind = InputPosition("crm.purchases", "id-1", 0, 8, previous=9)
    assert await store.save_batch([PendingWrite(behind, c1, u1)]) == [SaveResult.STATE_BEHIND]
    assert await store.save_batch([]) == []


async def test_customers_do_not_see_each_other(store: StateStore) -> None:
    alice, bob = scored("alice"), scored("bob", day=3)

    await store.save(*alice)
    await store.save(*bob)

    assert await store.load("alice") == alice[0]
    assert await store.load_score("bob") == bob[1]


async def test_missing_model_loads_as_none(store: StateStore) -> None:
    assert await store.load_model("bundle") is None


async def test_model_checkpoint_round_trips(store: StateStore) -> None:
    bundle = ModelBundle()
    state, _ = scored()
    bundle.churn.learn_one(state.pending_snapshots[0].features, churned=False)

    await store.save_model("bundle", bundle.to_bytes(), bundle.version)
    blob = await store.load_model("bundle")

    assert blob is not None
    assert ModelBundle.from_bytes(blob).version == bundle.version == "churn-1.segments-0.clv-0"


async def test_saving_a_model_again_overwrites_it(store: StateStore) -> None:
    await store.save_model("bundle", b"first", "v1")

    await store.save_model("bundle", b"second", "v2")

    assert await store.load_model("bundle") == b"second"


async def test_a_checkpoint_keeps_where_its_learner_reads_next(store: StateStore) -> None:
    await store.save_model("bundle", b"learned to 41", "v1", {"crm.model-updates|u|0": 42})

    assert await store.load_model("bundle") == b"learned to 41"
    assert await store.load_model_next_offsets("bundle") == {"crm.model-updates|u|0": 42}


async def test_a_newer_checkpoint_replaces_where_its_learner_reads_next(store: StateStore) -> None:
    await store.save_model("bundle", b"first", "v1", {"updates|u|0": 10, "old|o|0": 3})

    await store.save_model("bundle", b"second", "v2", {"updates|u|0": 25})

    assert await store.load_model_next_offsets("bundle") == {"updates|u|0": 25}


async def test_a_checkpoint_saved_without_positions_clears_the_stored_ones(
    store: StateStore,
) -> None:
    """An in-worker learner keeps no positions: the old ones would not describe its blob."""
    await store.save_model("bundle", b"from the learner process", "v1", {"updates|u|0": 10})

    await store.save_model("bundle", b"from an in-worker learner", "v2")

    assert await store.load_model_next_offsets("bundle") == {}


async def test_no_checkpoint_has_no_positions(store: StateStore) -> None:
    assert await store.load_model_next_offsets("bundle") == {}


async def test_models_are_kept_by_name(store: StateStore) -> None:
    await store.save_model("a", b"alpha", "v1")
    await store.save_model("b", b"beta", "v1")

    assert (await store.load_model("a"), await store.load_model("b")) == (b"alpha", b"beta")


async def test_namespaces_isolate(store: StateStore, neighbour: StateStore) -> None:
    state, score = scored()

    await store.save(state, score)
    await store.save_model("bundle", b"blob", "v1")

    assert await neighbour.load("c1") is None
    assert await neighbour.load_score("c1") is None
    assert await neighbour.load_model("bundle") is None
    assert await store.load("c1") == state


async def test_redis_key_layout_matches_the_documented_one(
    redis_store: RedisStateStore, services: EmbeddedServices, unique_name: str
) -> None:
    state, score = scored("c-42")
    at = InputPosition("crm.purchases", "t", 2, 7)
    await redis_store.save(state, score, LedgerDue(2, T0), at)
    await redis_store.save_model(
        "bundle", b"blob", "churn-3.segments-4.clv-0", {"crm.model-updates|u|0": 12}
    )

    raw = aioredis.Redis.from_url(services.redis_url, decode_responses=True)
    binary = aioredis.Redis.from_url(services.redis_url)
    try:
        customer_key = f"{unique_name}:v2:{{p2}}:customer:c-42"
        assert await raw.type(customer_key) == "hash"
        assert set(await raw.hkeys(customer_key)) == {"state", "score", "as_of"}
        as_of = await raw.hget(customer_key, "as_of")
        assert datetime.fromisoformat(str(as_of)) == score.as_of
        stored = await binary.hgetall(customer_key.encode())
        # State and score are compressed against a dictionary (streamcrm.store.codec).
        assert stored[b"state"][:1] == VERSION_3 and stored[b"score"][:1] == VERSION_3
        assert len(stored[b"state"]) < len(state.model_dump_json()) / 2
        assert CustomerState.model_validate_json(unpack(stored[b"state"])) == state
        assert CustomerScore.model_validate_json(unpack(stored[b"score"])) == score
        assert await raw.hget(f"{unique_name}:v2:{{p2}}:offsets", "crm.purchases|t|2") == "7"
        assert await raw.zscore(f"{unique_name}:v2:{{p2}}:due", "c-42") == T0.timestamp()
        assert await raw.get(f"{unique_name}:v2:model:{{bundle}}") == "blob"
        version_key = f"{unique_name}:v2:model:{{bundle}}:version"
        assert await raw.get(version_key) == "churn-3.segments-4.clv-0"
        next_offsets_key = f"{unique_name}:v2:model:{{bundle}}:next-offsets"
        assert await raw.hgetall(next_offsets_key) == {"crm.model-updates|u|0": "12"}
        assert sorted(await raw.keys(f"{unique_name}:*")) == [
            f"{unique_name}:v2:model:{{bundle}}",
            next_offsets_key,
            version_key,
            customer_key,
            f"{unique_name}:v2:{{p2}}:due",
            f"{unique_name}:v2:{{p2}}:offsets",
        ]
    finally:
        await raw.aclose()
        await binary.aclose()


async def test_a_namespace_still_in_the_v1_layout_is_refused_at_start_up(
    services: EmbeddedServices, unique_name: str
) -> None:
    """A worker would start from empty state while Kafka's committed offsets skip the history
    that built the v1 state: the start-up check says to rebuild it instead."""
    settings = Settings(redis_url=services.redis_url, redis_namespace=unique_name)
    check_redis(settings)  # an empty namespace is fine
    client = aioredis.Redis.from_url(services.redis_url)
    try:
        await client.hset(f"{unique_name}:v1:offsets", "crm.purchases|t|0", 41)

        with pytest.raises(
            ConfigurationError, match="v1 key layout .* rebuild the state by replay"
        ):
            check_redis(settings)
    finally:
        await client.aclose()


def test_every_key_of_one_partition_hashes_to_one_cluster_slot() -> None:
    """What lets each Lua step run on a Redis Cluster: the keys one step touches (customer,
    offsets, due index, outbox, campaign figures, block list, audit) share a slot, while
    partitions spread over slots; a checkpoint and its version share theirs."""
    ns = "streamcrm"

    def slots_of_partition(p: int) -> set[int]:
        keys = [key(ns, p) for key in (offsets_key, due_key, outbox_key, outbox_from_key)]
        keys += [campaigns_key(ns, p), erased_key(ns, p), audit_key(ns, p)]
        keys += [customer_key(ns, p, c) for c in ("c1", "alice", "p-0123abcd")]
        return {key_slot(key.encode()) for key in keys}

    assert all(len(slots_of_partition(p)) == 1 for p in range(64))
    assert len(set().union(*(slots_of_partition(p) for p in range(64)))) == 64
    model = model_key(ns, "bundle")
    assert key_slot(model.encode()) == key_slot(f"{model}:version".encode())
    assert key_slot(model.encode()) == key_slot(f"{model}:next-offsets".encode())


def test_a_customer_is_found_where_a_producer_keying_by_their_id_sends_them() -> None:
    """The partition of an id is the Kafka clients' default partitioner's: murmur2."""
    partitions = list(range(12))
    for customer_id in ("c1", "alice", "cust-000042", "p-5f2d"):
        expected = DefaultPartitioner()(customer_id.encode(), partitions, partitions)
        assert partition_of(customer_id, 12) == expected


async def test_a_pseudonymised_customer_is_found_by_the_stored_id_alone(store: StateStore) -> None:
    """With pseudonymised ids a customer is filed under the partition of the producers' raw
    id, which the pseudonym does not tell: readers with the stored id alone still find
    them (the web view, ``streamcrm score``), and erased_among finds their block."""
    state, score = scored("p-0123abcd")
    elsewhere = next(p for p in range(4) if p != partition_of("p-0123abcd", 4))
    await store.save(state, score, LedgerDue(elsewhere, None))

    assert await store.load("p-0123abcd") == state
    assert await store.load_score("p-0123abcd") == score
    assert await store.load_many(["p-0123abcd"]) == {"p-0123abcd": state}
    assert await store.load("p-0123abcd", elsewhere) == state
    await store.erase("p-0123abcd", elsewhere, None, T0)
    assert await store.erased_among(["p-0123abcd", "c1"]) == {"p-0123abcd"}


async def test_an_unreachable_redis_raises_store_unavailable() -> None:
    store = RedisStateStore(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(StoreUnavailableError):
            await store.load("c1")
        state, score = scored()
        with pytest.raises(StoreUnavailableError):
            await store.save(state, score)
    finally:
        await store.close()


RETENTION = timedelta(milliseconds=400)


@pytest.fixture(params=["in_memory", "redis", "redis_cluster"])
async def retaining_store(
    request: pytest.FixtureRequest, unique_name: str
) -> AsyncIterator[StateStore]:
    """A store of each kind that forgets customers after ``RETENTION`` without a save."""
    if request.param == "in_memory":
        yield InMemoryStateStore(retention=RETENTION)
        return
    if request.param == "redis_cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        store: RedisStateStore = RedisClusterStateStore.from_url(
            cluster.url, unique_name, RETENTION
        )
    else:
        services: EmbeddedServices = request.getfixturevalue("services")
        store = RedisStateStore(aioredis.Redis.from_url(services.redis_url), unique_name, RETENTION)
    yield store
    await store.close()


async def test_a_customer_without_events_for_the_retention_period_expires(
    retaining_store: StateStore,
) -> None:
    state, score = scored("quiet")
    await retaining_store.save(state, score)
    await asyncio.sleep(RETENTION.total_seconds() * 2)

    assert await retaining_store.load("quiet") is None
    assert await retaining_store.load_score("quiet") is None


async def test_each_save_restarts_the_retention_period(retaining_store: StateStore) -> None:
    state, score = scored("active")
    for _ in range(4):  # active for twice the retention period, never idle for one
        await retaining_store.save(state, score)
        await asyncio.sleep(RETENTION.total_seconds() / 2)

    assert await retaining_store.load("active") == state


async def test_the_retention_ttl_is_set_with_the_state_in_redis(
    services: EmbeddedServices, unique_name: str
) -> None:
    client = aioredis.Redis.from_url(services.redis_url)
    store = RedisStateStore(client, unique_name, timedelta(days=400))
    state, score = scored("ttl")
    await store.save(state, score)

    ttl_ms = await client.pttl(store.customer_key("ttl"))
    await store.close()
    assert timedelta(days=399) < timedelta(milliseconds=ttl_ms) <= timedelta(days=400)


async def test_every_stored_score_can_be_scanned(store: StateStore) -> None:
    saved = [scored(f"c{n}", day=n) for n in range(7)]
    for state, score in saved:
        await store.save(state, score)

    found = [score async for score in store.iter_scores()]

    assert sorted(found, key=lambda s: s.customer_id) == [score for _, score in saved]


async def test_the_due_index_lists_customers_due_by_a_time_earliest_first(
    store: StateStore,
) -> None:
    for customer_id, due_day in (("late", 30), ("soon", 10), ("none", None), ("mid", 20)):
        state, score = scored(customer_id)
        at = T0 + timedelta(days=due_day) if due_day is not None else None
        await store.save(state, score, LedgerDue(partition=3, at=at))

    assert await store.due_customers(3, T0 + timedelta(days=25), limit=10) == ["soon", "mid"]
    assert await store.due_customers(3, T0 + timedelta(days=99), limit=1) == ["soon"]
    assert await store.due_customers(4, T0 + timedelta(days=99), limit=10) == []


async def test_saving_with_nothing_due_or_forgetting_takes_a_customer_off_the_index(
    store: StateStore,
) -> None:
    for customer_id in ("a", "b"):
        state, score = scored(customer_id)
        await store.save(state, score, LedgerDue(partition=0, at=T0))
    state, score = scored("a")
    await store.save(state, score, LedgerDue(partition=0, at=None))
    await store.forget_due(0, "b")

    assert await store.due_customers(0, T0 + timedelta(days=1), limit=10) == []


async def test_an_erasure_deletes_state_score_and_due_entry_and_blocks_later_saves(
    store: StateStore,
) -> None:
    state, score = scored("alice")
    await store.save(state, score, LedgerDue(2, T0 + timedelta(days=90)))
    await store.save(*scored("bob"))

    report = await store.erase("alice", 2, InputPosition("crm.privacy", "p", 2, 7), T0)

    assert report.state_deleted and not report.already_applied
    assert await store.load("alice") is None and await store.load_score("alice") is None
    assert await store.due_customers(2, T0 + timedelta(days=365), 10) == []
    assert await store.load("bob") is not None  # nobody else is touched
    later = await store.save(state, score, LedgerDue(2, None))  # her events come on 2
    assert later == SaveResult.CUSTOMER_ERASED
    assert await store.load("alice") is None


async def test_an_erasure_is_applied_once_per_message_and_audited_without_the_customer_id(
    store: StateStore,
) -> None:
    await store.save(*scored("alice"), LedgerDue(0, None))
    at = InputPosition("crm.privacy", "p", 0, 3)

    first = await store.erase("alice", 0, at, T0)
    again = await store.erase("alice", 0, at, T0)

    assert (first.already_applied, again.already_applied) == (False, True)
    records = await store.audit_records()
    assert [r["action"] for r in records] == ["erasure"]
    assert records[0]["subject"] == first.subject and records[0]["state_deleted"] == "1"
    assert all("alice" not in value for record in records for value in record.values())


async def test_recorded_consent_lifts_the_block_and_is_audited(store: StateStore) -> None:
    state, score = scored("alice")
    await store.erase("alice", 0, None, T0)
    assert await store.save(state, score, LedgerDue(0, None)) == SaveResult.CUSTOMER_ERASED

    assert await store.record_consent("alice", None, T0 + timedelta(days=1), partition=0)

    assert await store.save(state, score, LedgerDue(0, None)) == SaveResult.APPLIED
    assert [r["action"] for r in await store.audit_records()] == ["erasure", "consent"]


async def test_a_stored_mark_below_the_writers_previous_one_is_reported_as_state_behind(
    store: StateStore,
) -> None:
    state, score = scored()
    assert await store.save(state, score, None, InputPosition("crm.purchases", "t", 0, 5))

    # The writer had applied up to offset 9, but the store kept only up to 5 (lost writes):
    later = InputPosition("crm.purchases", "t", 0, 10, previous=9)

    assert await store.save(state, score, None, later) == SaveResult.STATE_BEHIND
    assert await store.mark_applied(later) == SaveResult.STATE_BEHIND
    assert await store.applied_offset(later) == 5  # nothing was written


async def test_a_cluster_batchs_step_after_a_failover_dropped_its_earlier_step_is_refused(
    redis_cluster_store: RedisClusterStateStore, unique_name: str
) -> None:
    """A batch on a Redis Cluster is written in steps (one script per run of writes of one
    partition). A failover between two steps may drop the earlier one: the later step must
    not pass on the replica by holding only the marks from before the batch."""
    store = redis_cluster_store
    marks = {p: InputPosition("crm.support", "t", p, 4) for p in (0, 1)}
    assert (
        await store.save_batch([PendingWrite(m) for m in marks.values()])
        == [SaveResult.APPLIED] * 2
    )
    made = store._write_script
    steps = 0

    async def first_step_dropped(keys: list[str], args: list[object]) -> object:
        nonlocal steps
        result = await made(keys=keys, args=args)
        steps += 1
        if steps == 1:  # the replica that takes over never received it
            await store._redis.hset(offsets_key(unique_name, 0), marks[0].mark_field, "4")
        return result

    store._write_script = first_step_dropped  # type: ignore[assignment]
    batch = [
        PendingWrite(InputPosition("crm.support", "t", p, offset, previous=4))
        for p, offset in ((0, 5), (1, 5), (0, 6))
    ]

    results = await store.save_batch(batch)

    assert results == [SaveResult.APPLIED, SaveResult.APPLIED, SaveResult.STATE_BEHIND]
    assert await store.applied_offset(marks[0]) == 4  # not moved past the lost write


async def test_a_write_holding_another_topics_mark_the_store_lost_writes_nothing(
    store: StateStore,
) -> None:
    """A state read while the partition's feedback mark stood at 7: the store now has only up
    to 5 of it (lost writes), so the state may carry lost feedback and is not written."""
    state, score = scored()
    feedback = InputPosition("crm.feedback", "t", 0, 5)
    assert await store.save(state, score, LedgerDue(0, None), feedback)
    purchase = InputPosition("crm.purchases", "t", 0, 3)
    held = ((feedback.mark_field, 7),)

    refused = PendingWrite(purchase, state, score, LedgerDue(0, None), guard=held)
    sweep = PendingWrite(None, state, score, LedgerDue(0, None), guard=held)

    assert await store.save_batch([refused]) == [SaveResult.STATE_BEHIND]
    assert await store.save_batch([sweep]) == [SaveResult.STATE_BEHIND]
    assert await store.applied_offset(purchase) is None  # nothing was written
    held_now = ((feedback.mark_field, 5),)
    assert await store.save_batch(
        [PendingWrite(purchase, state, score, LedgerDue(0, None), guard=held_now)]
    ) == [SaveResult.APPLIED]


async def test_privacy_requests_after_lost_writes_of_their_partition_do_nothing(
    store: StateStore,
) -> None:
    state, score = scored("alice")
    assert await store.save(state, score, LedgerDue(0, None))
    applied = InputPosition("crm.privacy", "t", 0, 4)
    assert await store.erase("bob", 0, applied, T0)
    # The writer had applied up to offset 6, but the store kept only up to 4 (lost writes):
    later = InputPosition("crm.privacy", "t", 0, 7, previous=6)

    report = await store.erase("alice", 0, later, T0)
    consent = await store.record_consent("bob", later, T0, partition=0)

    assert report.store_behind and not report.state_deleted
    assert consent == SaveResult.STATE_BEHIND
    assert await store.load("alice", 0) is not None  # nothing was done
    assert await store.erased_among(["alice", "bob"]) == {"bob"}
    assert await store.applied_offset(later) == 4


async def test_marking_a_dead_lettered_message_moves_the_mark_once(store: StateStore) -> None:
    at = InputPosition("crm.purchases", "t", 1, 3)

    assert await store.mark_applied(at) == SaveResult.APPLIED
    assert await store.mark_applied(at) == SaveResult.ALREADY_APPLIED
    assert await store.applied_offset(at) == 3


async def test_clearing_an_outbox_removes_the_records_named_at_its_head_and_nothing_else(
    store: StateStore,
) -> None:
    """Cleared by identity: a second clearing of records another drain cleared already
    leaves the outputs appended since."""
    state = CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0)
    first = tuple(OutboxRecord("scores", "c", f'{{"n": {n}}}', f"id{n}") for n in range(3))
    appended = OutboxRecord("alerts", "c", '{"n": 9}', "id9")
    await store.save(state, None, LedgerDue(0, None), None, first)

    assert await store.clear_outbox(0, first[:2]) == 2
    await store.save(state, None, LedgerDue(0, None), None, (appended,))
    assert await store.clear_outbox(0, first) == 1  # id0 and id1 were gone already
    assert await store.outbox(0, 10) == [appended]
    assert await store.clear_outbox(0, first) == 0
    assert await store.outbox(0, 10) == [appended]


async def test_campaign_increments_are_summed_per_partition_with_the_write_and_only_then(
    store: StateStore,
) -> None:
    """A partition's partial campaign figures move in the same step as the customer and the
    mark: a write refused (its offset applied already) adds nothing."""
    state = CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0)
    first = InputPosition("crm.marketing", "t", 3, 0)
    again = InputPosition("crm.marketing", "t", 3, 0)
    second = InputPosition("crm.purchases", "t", 3, 1)

    results = await store.save_batch(
        [
            PendingWrite(first, state, campaign_increments=(("s|A||touches", 1),)),
            PendingWrite(second, state, campaign_increments=(("s|A||conversions", 1),)),
        ]
    )
    refused = await store.save_batch(
        [PendingWrite(again, state, campaign_increments=(("s|A||touches", 1),))]
    )
    await store.save_batch(
        [
            PendingWrite(
                InputPosition("crm.purchases", "t", 3, 2),
                state,
                due=LedgerDue(3, None),
                campaign_increments=(("s|A||conversions", -1), ("s|B||conversions", 1)),
            )
        ]
    )

    assert results == [SaveResult.APPLIED, SaveResult.APPLIED]
    assert refused == [SaveResult.ALREADY_APPLIED]
    assert await store.campaign_fields(3) == {
        "s|A||touches": 1,
        "s|A||conversions": 0,
        "s|B||conversions": 1,
    }
    assert await store.campaign_fields(4) == {}


async def test_forgotten_campaign_fields_go_and_the_others_stay(store: StateStore) -> None:
    state = CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0)
    increments = (("s|A||touches", 2), ("s|A||touches@100", 2), ("s|A||conversions@100", 1))
    await store.save_batch(
        [
            PendingWrite(
                InputPosition("crm.marketing", "t", 5, 0), state, campaign_increments=increments
            )
        ]
    )

    await store.forget_campaign_fields(5, ["s|A||touches@100", "s|A||conversions@100", "absent"])
    await store.forget_campaign_fields(5, [])

    assert await store.campaign_fields(5) == {"s|A||touches": 2}
