"""The settings object: one frozen, validated source of configuration."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamcrm.errors import ConfigurationError
from streamcrm.settings import Settings


def test_settings_are_read_from_streamcrm_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMCRM_CHURN_WINDOW_DAYS", "30")
    monkeypatch.setenv("STREAMCRM_EXCHANGE_RATES", '{"USD": 1.0, "EUR": 1.1}')

    settings = Settings.from_env()

    assert settings.scoring.churn_window == timedelta(days=30)
    assert dict(settings.scoring.rules.exchange_rates) == {"USD": 1.0, "EUR": 1.1}


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        Settings().partitions = 8  # type: ignore[misc]


def test_retention_shorter_than_the_churn_window_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must exceed the heartbeat horizon"):
        Settings(customer_retention_days=250, churn_window_days=90, heartbeat_horizon_days=180)


def test_retention_can_be_switched_off() -> None:
    assert Settings(customer_retention_days=None).customer_retention is None


def test_the_reporting_currency_must_have_rate_one() -> None:
    with pytest.raises(ConfigurationError, match="reporting currency EUR"):
        Settings(reporting_currency="EUR")


def test_local_broker_settings_shorten_the_group_timeouts_only() -> None:
    production = Settings()
    local = production.for_local_broker("127.0.0.1:9092", "redis://127.0.0.1:6379/0")

    assert local.broker_rebalance_timeout_s < production.broker_rebalance_timeout_s
    assert local.churn_window_days == production.churn_window_days
    assert (local.kafka_bootstrap, local.redis_url) == (
        "127.0.0.1:9092",
        "redis://127.0.0.1:6379/0",
    )


def test_retention_is_switched_off_from_the_environment_with_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMCRM_CUSTOMER_RETENTION_DAYS", "none")

    assert Settings.from_env().customer_retention is None


def test_pseudonymised_ids_need_a_privacy_key() -> None:
    with pytest.raises(ConfigurationError, match="needs privacy_key"):
        Settings(pseudonymise_customer_ids=True)
    keyed = Settings(pseudonymise_customer_ids=True, privacy_key="k")  # type: ignore[arg-type]
    assert keyed.pseudonymise is not None
    assert keyed.pseudonymise("c1") == keyed.pseudonymise("c1") != "c1"
    assert Settings().pseudonymise is None


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`(STREAMCRM_[A-Z0-9_]+)`", page))
    settings = {f"STREAMCRM_{name.upper()}" for name in Settings.model_fields}

    assert sorted(settings - documented) == []
    assert sorted(documented - settings) == []


def test_the_start_up_wait_is_read_from_the_environment_and_must_be_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMCRM_STARTUP_WAIT_S", raising=False)
    assert Settings.from_env().startup_wait_s == 30.0
    monkeypatch.setenv("STREAMCRM_STARTUP_WAIT_S", "90")

    assert Settings.from_env().startup_wait_s == 90.0
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings(startup_wait_s=0)


def test_local_tansu_consumers_wait_briefly_for_fetches_and_kafka_ones_keep_faust_s_wait() -> None:
    tansu = Settings().for_local_broker("127.0.0.1:9092", "redis://127.0.0.1:6379/0")
    kafka = Settings(embedded_broker="kafka").for_local_broker(
        "127.0.0.1:9092", "redis://127.0.0.1:6379/0"
    )

    assert tansu.kafka_fetch_max_wait_ms == 10  # Tansu waits out a fetch even when data come
    assert kafka.kafka_fetch_max_wait_ms is None  # Apache Kafka answers when data arrive
    assert kafka.broker_rebalance_timeout_s == tansu.broker_rebalance_timeout_s
