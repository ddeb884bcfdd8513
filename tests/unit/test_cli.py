"""The ``streamcrm`` command's own options."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streamcrm.cli.main import main
from streamcrm.errors import ConnectionRejectedError, ServiceUnreachableError


def test_version_prints_the_installed_version_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"streamcrm {version('streamcrm')}"


def test_an_unreachable_broker_is_a_one_line_error_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kafka.errors import KafkaTimeoutError

    import streamcrm.cli.main

    def unreachable(settings: object, args: object) -> int:
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    monkeypatch.setenv("STREAMCRM_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setattr(streamcrm.cli.main, "run_topics", unreachable)

    assert main(["topics"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("streamcrm: Kafka unavailable at 127.0.0.1:1: ")
    assert "Unable to bootstrap" in error and "Traceback" not in error


@pytest.mark.parametrize("command", ["worker", "learner"])
@pytest.mark.parametrize(
    "refusal",
    [
        ConnectionRejectedError(
            "Kafka TLS handshake with b:9093 failed: certificate verify failed"
        ),
        ServiceUnreachableError("Redis unavailable at redis://r:6379/0: refused; gave up after 9"),
    ],
)
def test_a_worker_or_learner_whose_start_up_check_fails_says_so_in_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refusal: Exception,
    command: str,
) -> None:
    import streamcrm.cli.main

    def fails(settings: object) -> None:
        raise refusal

    monkeypatch.setenv("STREAMCRM_KAFKA_BOOTSTRAP", "b:9093")
    monkeypatch.setenv("STREAMCRM_REDIS_URL", "redis://r:6379/0")
    monkeypatch.setattr(streamcrm.cli.main, "check_connections", fails)

    assert main([command]) == 2
    assert capsys.readouterr().err == f"streamcrm: {refusal}\n"
