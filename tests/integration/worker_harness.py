"""A real streamcrm worker process for integration tests, and ways to read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
from kafka import KafkaConsumer

from streamcrm.core.events import Event, MarketingEvent, PurchaseEvent
from streamcrm.core.records import CustomerScore, DeadLetter
from streamcrm.core.state import CustomerState
from streamcrm.services.kafka import (
    Record,
    ensure_topics,
    make_producer,
    poll_records,
    produce_events,
    read_topic,
)
from streamcrm.services.processes import (
    start_worker_process,
    stop_worker_process,
    worker_environment,
)
from streamcrm.settings import Settings
from streamcrm.store import audit_key, customer_key, erased_key, model_key, partition_of
from streamcrm.store.codec import unpack
from streamcrm.worker.learning import MODEL_CHECKPOINT

WAIT_S = 90.0
_T = TypeVar("_T")


PROBES = Path(__file__).parent / "probes"
"""The fault-test probes' ``sitecustomize`` (see ``probes/sitecustomize.py``)."""


@contextmanager
def running_worker(
    settings: Settings, log_path: Path, probes: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``streamcrm worker`` as a subprocess; its log is printed if the test fails.

    ``probes``: ``STREAMCRM_PROBE_*`` variables for the probes loaded into the worker."""
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    if probes:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = worker_environment(settings) | dict(probes)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBES), env.get("PYTHONPATH")]))
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamcrm", "worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
    else:
        process = start_worker_process(settings, log_path)
    try:
        yield process
    except BaseException:
        print(f"--- worker log {log_path} (tail) ---")
        print(log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        stop_worker_process(process)


REFUSED_WITHIN_S = 20.0
"""A refused worker exits well within this (measured: 4-6 s, most of it Python starting);
without the start-up check a wrong Redis password never ended and a TLS refusal took 32-35 s."""


@dataclass(frozen=True)
class Exited:
    returncode: int
    output: str
    last_error_line: str
    seconds: float


def worker_until_it_exits(
    settings: Settings, timeout_s: float = 60.0, command: str = "worker"
) -> Exited:
    """Run ``streamcrm worker`` (or another ``command``) configured by ``settings``; killed
    if it outlives ``timeout_s``."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamcrm", command],
        env=worker_environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    errors = done.stderr.strip().splitlines()
    return Exited(
        done.returncode,
        done.stdout + done.stderr,
        errors[-1] if errors else "",
        time.monotonic() - started,
    )


def one_purchase(customer_id: str, days_ago: float = 1.0) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer_id}-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        order_id=f"{customer_id}-o1",
        amount=42.5,
        items=1,
        channel="web",
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


def wait_for_score(reader: KafkaConsumer, customer_id: str, timeout_s: float) -> CustomerScore:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in poll_records(reader, timeout_ms=500):
            if record.value is not None:
                score = CustomerScore.model_validate_json(record.value)
                if score.customer_id == customer_id:
                    return score
    raise AssertionError(f"no score for {customer_id} within {timeout_s:g} s")


def send(settings: Settings, events: Iterable[Event | MarketingEvent]) -> int:
    """Produce events with kafka-python, keyed by customer, to their topics."""
    assert settings.kafka_bootstrap is not None
    producer = make_producer(settings.kafka_bootstrap)
    try:
        sent = produce_events(producer, settings, events)
        producer.flush()
        return sent
    finally:
        producer.close()


def send_raw(settings: Settings, topic: str, key: bytes | None, value: bytes) -> None:
    """Produce raw bytes (for malformed messages)."""
    assert settings.kafka_bootstrap is not None
    producer = make_producer(settings.kafka_bootstrap)
    try:
        producer.send(topic, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


class TopicReader:
    """Accumulates every record of one topic from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer: KafkaConsumer = read_topic(bootstrap, topic)
        self.records: list[Record] = []

    def wait_for(self, done: Callable[[list[Record]], bool], timeout_s: float = WAIT_S) -> None:
        """Poll until ``done(records)`` holds; fail the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s with {len(self.records)} records"
                )
            self.records.extend(poll_records(self.consumer, timeout_ms=300))

    def drain(self, seconds: float = 1.0) -> list[Record]:
        """Read whatever arrives within ``seconds``; return all records so far."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.records.extend(poll_records(self.consumer, timeout_ms=200))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def scores(records: Iterable[Record]) -> list[CustomerScore]:
    return [CustomerScore.model_validate_json(r.value) for r in records if r.value is not None]


def dead_letters(records: Iterable[Record]) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in records if r.value is not None]


def redis_client(settings: Settings, **options: Any) -> redis.Redis | redis.RedisCluster:
    """A sync client on the workers' Redis: a cluster client when they use a Redis Cluster."""
    assert settings.redis_url is not None
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def stored_customer_key(settings: Settings, customer_id: str) -> str:
    """The key of a customer whose events are keyed by their stored id (ids not
    pseudonymised): under the partition a producer keying by that id sends to."""
    partition = partition_of(customer_id, settings.partitions)
    return customer_key(settings.redis_namespace, partition, customer_id)


def audit_entries(settings: Settings) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every partition's privacy audit records, oldest first (by stream id)."""
    client = redis_client(settings)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = [
            entry
            for partition in range(settings.partitions)
            for entry in cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                client.xrange(audit_key(settings.redis_namespace, partition)),
            )
        ]
    finally:
        client.close()
    return sorted(entries, key=lambda e: tuple(int(p) for p in e[0].decode().split("-")))


def erased_count(settings: Settings) -> int:
    """How many customers the block lists of all partitions hold."""
    client = redis_client(settings)
    try:
        return sum(
            int(client.hlen(erased_key(settings.redis_namespace, partition)))
            for partition in range(settings.partitions)
        )
    finally:
        client.close()


def redis_state(settings: Settings, customer_id: str) -> tuple[CustomerState | None, bytes | None]:
    """A customer's state and stored score JSON straight from Redis (sync client)."""
    client = redis_client(settings)
    try:
        raw_state, raw_score = client.hmget(
            stored_customer_key(settings, customer_id), ["state", "score"]
        )
    finally:
        client.close()
    state = CustomerState.model_validate_json(unpack(raw_state)) if raw_state else None
    return state, unpack(raw_score) if raw_score else None


def redis_model_version(settings: Settings) -> str | None:
    """The version of the newest model checkpoint in Redis."""
    client = redis_client(settings)
    try:
        raw = client.get(model_key(settings.redis_namespace, MODEL_CHECKPOINT) + ":version")
    finally:
        client.close()
    return raw.decode() if isinstance(raw, bytes) and raw else None


def settled_model_version(settings: Settings) -> str | None:
    """The newest checkpoint's version once it has not changed for four checkpoint intervals:
    the shared learner has taken in everything sent, and every worker has loaded it."""
    settled, stable_since = redis_model_version(settings), time.monotonic()
    while time.monotonic() - stable_since < 4 * settings.model_checkpoint_interval_s:
        time.sleep(0.5)
        if (now := redis_model_version(settings)) != settled:
            settled, stable_since = now, time.monotonic()
    return settled


def get(url: str) -> tuple[int, bytes, str]:
    """Status, body and content type of a GET (errors included, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def eventually(probe: Callable[[], _T | None], what: str, timeout_s: float = 30.0) -> _T:
    """Call ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = probe()
        except (urllib.error.URLError, ConnectionError):  # the server is not up yet
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.5)
