"""Processes streamcrm starts: a command with its output in a log file (:func:`start_process`,
the one spawner of the workers, the benchmarks' baselines and the embedded services), a
server started that way (:class:`RunningService`: stopped by its pid, never by name), and
``python -m streamcrm worker`` started with exactly a given
:class:`~streamcrm.settings.Settings` and stopped cleanly (what the demo, the benchmarks and
the tests share).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streamcrm.errors import ServiceError
from streamcrm.settings import Settings

STARTUP_TIMEOUT_S = 20.0
"""How long an embedded service may take to listen on its port."""


def worker_environment(settings: Settings) -> dict[str, str]:
    """Environment for a worker subprocess that uses exactly ``settings``.

    Secrets are passed unwrapped (a dump shows them as ``**********``): the child must be
    able to connect. The environment is the child's own; nothing here logs it.
    """
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        key = f"STREAMCRM_{name.upper()}"
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            env[key] = secret.get_secret_value()
        elif value is None:
            env[key] = "none"  # parsed as None (env_parse_none_str), not the default
        elif isinstance(value, dict | list):
            env[key] = json.dumps(value)
        else:
            env[key] = str(value)
    return env


def start_process(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` (with ``env``, else this process's environment), its standard output and
    error both written to ``log_path`` (created, with its directory), no standard input."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:  # the child holds its own descriptor
        return subprocess.Popen(
            list(args),
            env=None if env is None else dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m streamcrm worker`` configured by ``settings``; output to ``log_path``."""
    return start_process(
        [sys.executable, "-m", "streamcrm", "worker"], log_path, worker_environment(settings)
    )


def start_learner_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m streamcrm learner`` (the shared learner of workers set to
    ``learner=process``) configured by ``settings``; stop it as a worker."""
    return start_process(
        [sys.executable, "-m", "streamcrm", "learner"], log_path, worker_environment(settings)
    )


def stop_worker_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """Ask a worker to stop (SIGTERM: Faust shuts down cleanly), kill it if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def wait_for_port(service: RunningService, port: int, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Return once ``service`` accepts connections on loopback ``port``; raise
    :class:`ServiceError` (with its log's tail) when it exits first, or stop it and raise when
    ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            log = service.log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"{service.name} exited with {service.process.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    service.stop()
    raise ServiceError(f"{service.name} did not listen on port {port} within {timeout_s}s")
