"""Worker processes: ``python -m streamcrm worker`` started with exactly a given
:class:`~streamcrm.settings.Settings`, its output in a log file, and stopped cleanly (the one
spawner the demo, the benchmarks and the tests share).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from streamcrm.settings import Settings


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


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m streamcrm worker`` configured by ``settings``; output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streamcrm", "worker"],
            env=worker_environment(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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
