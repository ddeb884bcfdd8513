"""Starting processes and completing settings with embedded services, without a broker."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamcrm.services import embedded
from streamcrm.services.embedded import EmbeddedServices, embedded_settings
from streamcrm.services.processes import start_process
from streamcrm.settings import Settings

SPEAKS_ON_BOTH = "import sys; print('out'); print('err', file=sys.stderr)"


def test_a_started_process_writes_its_output_and_errors_to_the_log(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "child.log"

    process = start_process([sys.executable, "-c", SPEAKS_ON_BOTH], log_path)

    assert process.wait(timeout=60) == 0
    assert log_path.read_text().split() == ["out", "err"]


def test_a_started_process_gets_the_environment_it_is_given(tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"
    reads_env = "import os; print(os.environ.get('STREAMCRM_PROBE'))"

    process = start_process([sys.executable, "-c", reads_env], log_path, {"STREAMCRM_PROBE": "7"})

    assert process.wait(timeout=60) == 0
    assert log_path.read_text().strip() == "7"


@pytest.fixture
def fake_services(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str | None, str]]:
    """Stand-in for :func:`embedded.embedded_services`: records what it was asked to start
    and hands out fixed addresses for whatever is not configured."""
    asked: list[tuple[str | None, str | None, str]] = []

    @contextlib.contextmanager
    def services(
        kafka_bootstrap: str | None = None, redis_url: str | None = None, broker: str = "tansu"
    ) -> Iterator[EmbeddedServices]:
        asked.append((kafka_bootstrap, redis_url, broker))
        yield EmbeddedServices(
            kafka_bootstrap=kafka_bootstrap or "127.0.0.1:19092",
            redis_url=redis_url or "redis://127.0.0.1:16379/0",
            embedded_broker=None if kafka_bootstrap else broker,  # type: ignore[arg-type]
            embedded_redis=redis_url is None,
        )

    monkeypatch.setattr(embedded, "embedded_services", services)
    return asked


def test_an_embedded_broker_brings_the_local_run_settings(
    fake_services: list[tuple[str | None, str | None, str]],
) -> None:
    configured = Settings(kafka_bootstrap=None, redis_url=None)

    with embedded_settings(configured) as settings:
        assert settings == configured.for_local_broker(
            "127.0.0.1:19092", "redis://127.0.0.1:16379/0"
        )
    assert fake_services == [(None, None, "tansu")]


def test_a_configured_broker_keeps_its_settings_and_gains_only_redis(
    fake_services: list[tuple[str | None, str | None, str]],
) -> None:
    configured = Settings(kafka_bootstrap="broker:9092", redis_url=None)

    with embedded_settings(configured) as settings:
        assert settings == configured.model_copy(update={"redis_url": "redis://127.0.0.1:16379/0"})
        assert settings.broker_rebalance_timeout_s == configured.broker_rebalance_timeout_s
    assert fake_services == [("broker:9092", None, "tansu")]


def test_the_embedded_broker_setting_chooses_the_broker_started(
    fake_services: list[tuple[str | None, str | None, str]],
) -> None:
    configured = Settings(kafka_bootstrap=None, redis_url=None, embedded_broker="kafka")

    with embedded_settings(configured):
        pass

    assert fake_services == [(None, None, "kafka")]


def test_the_services_started_are_announced_with_their_addresses(
    fake_services: list[tuple[str | None, str | None, str]],
) -> None:
    announced: list[str] = []

    with embedded_settings(Settings(kafka_bootstrap=None, redis_url=None), announced.append):
        pass

    assert announced == [
        "embedded Tansu broker: 127.0.0.1:19092 (STREAMCRM_KAFKA_BOOTSTRAP=127.0.0.1:19092)",
        "embedded redis-server: redis://127.0.0.1:16379/0"
        " (STREAMCRM_REDIS_URL=redis://127.0.0.1:16379/0)",
    ]


def test_configured_services_are_not_announced(
    fake_services: list[tuple[str | None, str | None, str]],
) -> None:
    announced: list[str] = []
    configured = Settings(kafka_bootstrap="broker:9092", redis_url="redis://redis:6379/0")

    with embedded_settings(configured, announced.append):
        pass

    assert announced == []
