"""The commands that talk to Kafka, pointed at a port where no broker listens: a one-line
error naming what is unreachable and exit code 2, not a Python traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on (bound once to find it, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_topics_against_an_unreachable_broker_says_so_and_exits_2() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    environment = {**os.environ, "STREAMCRM_KAFKA_BOOTSTRAP": bootstrap}
    done = subprocess.run(
        [sys.executable, "-m", "streamcrm", "topics"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"streamcrm: Kafka unavailable at {bootstrap}: ")
    )
