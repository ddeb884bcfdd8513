"""One frozen settings object, read from ``STREAMCRM_*`` environment variables at start-up.

Nothing reads the environment at import time: call :meth:`Settings.from_env` once and pass
the object down.

>>> Settings().topics.scores
'crm.scores'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamcrm.addresses import (
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
    redact_url,
    split_url_password,
    url_username,
)
from streamcrm.core.alerts import AlertRules
from streamcrm.core.campaigns import ABTestRules, RetentionPlan
from streamcrm.core.experiments import JEFFREYS_PRIOR, UNIFORM_PRIOR
from streamcrm.core.privacy import pseudonym
from streamcrm.core.scoring import ScoringConfig
from streamcrm.core.state import DEFAULT_EXCHANGE_RATES, StateRules
from streamcrm.errors import ConfigurationError

LOCAL_FETCH_MAX_WAIT_MS = 10
"""A local (Tansu) consumer's longest fetch wait: Tansu waits it out even when data comes."""


@dataclass(frozen=True)
class Topics:
    """Every topic name, derived from one prefix."""

    prefix: str

    @property
    def purchases(self) -> str:
        return f"{self.prefix}.purchases"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}.feedback"

    @property
    def support(self) -> str:
        return f"{self.prefix}.support"

    @property
    def scores(self) -> str:
        return f"{self.prefix}.scores"

    @property
    def alerts(self) -> str:
        """Alerts people can act on, keyed by customer (``model`` for model-wide ones)."""
        return f"{self.prefix}.alerts"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def model_metrics(self) -> str:
        return f"{self.prefix}.model-metrics"

    @property
    def model_updates(self) -> str:
        """What every worker's models should learn, for the one shared learner (1 partition)."""
        return f"{self.prefix}.model-updates"

    @property
    def privacy(self) -> str:
        """Erasure requests and consent records (GDPR / CCPA)."""
        return f"{self.prefix}.privacy"

    @property
    def marketing(self) -> str:
        """Campaign touches, retention offers, opens and clicks (see docs/marketing.md)."""
        return f"{self.prefix}.marketing"

    @property
    def campaign_metrics(self) -> str:
        """Each campaign's figures and A/B test, keyed by campaign id (docs/marketing.md)."""
        return f"{self.prefix}.campaign-metrics"

    @property
    def uplift(self) -> str:
        """The uplift of acting on alerts, per kind and segment (docs/marketing.md)."""
        return f"{self.prefix}.uplift"

    @property
    def inputs(self) -> tuple[str, str, str]:
        """The topics of the customer's own events, which are scored."""
        return (self.purchases, self.feedback, self.support)

    @property
    def all(self) -> tuple[str, ...]:
        return (
            *self.inputs,
            self.privacy,
            self.marketing,
            self.scores,
            self.alerts,
            self.deadletter,
            self.model_metrics,
            self.model_updates,
            self.campaign_metrics,
            self.uplift,
        )


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
EmbeddedBroker = Literal["tansu", "kafka"]


def _files_exist(paths: dict[str, Path | None]) -> None:
    for name, path in paths.items():
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{name}: no such file: {path}")


class Settings(BaseSettings):
    """Everything a streamcrm process can be told; see ``docs/configuration.md``."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMCRM_", frozen=True, extra="ignore", env_parse_none_str="none"
    )

    app_id: str = Field("streamcrm", description="Faust app id = Kafka consumer group.")
    kafka_bootstrap: str | None = Field(
        None,
        description="host:port[,host:port]; unset = start an embedded broker (embedded_broker).",
    )
    embedded_broker: EmbeddedBroker = Field(
        "tansu",
        description="The broker started when kafka_bootstrap is unset: tansu (light, in "
        "memory) or kafka (Apache Kafka, as in production; ./dev setup fetches it).",
    )
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db (rediss:// for TLS); unset = start an embedded "
        "redis-server. A password written in the URL is moved to redis_password.",
    )
    redis_cluster: bool = Field(
        False,
        description="redis_url names a node of a Redis Cluster: state is kept across its "
        "masters, one hash slot per input partition (docs/operations.md, Redis Cluster).",
    )
    # Secure connections (docs/security.md). Passwords are SecretStr: repr, str and dumps show
    # '**********'; streamcrm.services.connections unwraps them only to hand them to a client.
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="CA bundle (PEM) the broker's certificate is checked against; "
        "unset = the system's CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS; may also hold the key."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM).")
    kafka_ssl_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key; unset = the key is not encrypted."
    )
    redis_username: str | None = Field(None, description="Redis ACL user; unset = default.")
    redis_password: SecretStr | None = Field(None, description="Redis AUTH / ACL password.")
    redis_ssl_ca_certs: Path | None = Field(
        None, description="CA bundle (PEM) for a rediss:// URL; unset = the system's CAs."
    )
    redis_ssl_certfile: Path | None = Field(None, description="Client certificate (PEM).")
    redis_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM).")
    redis_ssl_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key; unset = the key is not encrypted."
    )
    startup_wait_s: float = Field(
        30.0,
        gt=0,
        description="How long a worker's start-up check retries a Kafka or Redis that does not "
        "answer before it exits with code 2; a refusal (certificate, password) exits at once.",
    )
    topic_prefix: str = Field("crm", description="Topics are <prefix>.purchases, ... .scores.")
    redis_namespace: str = Field("streamcrm", description="Redis keys start <namespace>:v2:.")
    partitions: int = Field(
        4,
        ge=1,
        description="Partitions per topic when streamcrm creates it; must be the input topics' "
        "count (Redis files each customer under the partition their events arrive on).",
    )
    replication_factor: int = Field(1, ge=1)
    churn_window_days: float = Field(90.0, gt=0, description="Churn window W for labels.")
    attribution_window_days: float = Field(
        7.0,
        gt=0,
        le=365,
        description="A purchase this long after a campaign touch at most is attributed to it "
        "(the customer's latest touch before it; docs/marketing.md).",
    )
    allowed_lateness_hours: float = Field(
        48.0, ge=0, description="How far behind its topic's newest event an event may be."
    )
    max_event_time_skew_hours: float | None = Field(
        24.0,
        ge=0,
        description="Events dated more than this ahead of the worker's wall clock are "
        "dead-lettered (future_event_time); unset = accept any event time.",
    )
    require_message_keys: bool = Field(
        True,
        description="An input event whose Kafka message key is missing, longer than 256 "
        "bytes or not its customer_id (or that id's pseudonym) is dead-lettered "
        "(missing_key, key_too_long, key_mismatch).",
    )
    customer_retention_days: float | None = Field(
        400.0,
        gt=0,
        description="Customers with no event processed for this long expire from Redis; "
        "unset = keep forever. Must exceed the churn window plus the allowed lateness.",
    )
    personal_data_retention_hours: float | None = Field(
        168.0,
        gt=0,
        description="Retention (retention.ms) given to the topics streamcrm creates that hold "
        "customer data and are not compacted: alerts, dead letters, model updates; an erased "
        "customer's records there are gone after it (docs/privacy.md). none = the broker's "
        "default. Set when the topics are created.",
    )
    reporting_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    exchange_rates: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EXCHANGE_RATES),
        description="Reporting-currency units per unit of each accepted currency (JSON).",
    )
    discount_rate: float = Field(0.10, ge=0, description="Yearly discount rate r for CLV.")
    clv_horizon_years: int = Field(5, ge=1, le=50)
    batch_max_events: int = Field(
        500, ge=1, description="Events a worker scores together (one Redis round trip each way)."
    )
    batch_max_wait_ms: float = Field(
        20.0, gt=0, description="How long a batch waits to fill before it is scored anyway."
    )
    model_checkpoint_interval_s: float = Field(10.0, gt=0)
    learner: Literal["in-worker", "process"] = Field(
        "in-worker",
        description="Where the shared learner runs: in whichever scoring worker owns the "
        "model-updates topic (in-worker, one process is enough), or in `streamcrm learner` "
        "(process: scoring workers only publish updates and load checkpoints).",
    )
    metrics_interval_s: float = Field(
        10.0, gt=0, description="How often model metrics and campaign metrics go out."
    )
    alert_control_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of churn alerts held out as control (marked control: true; "
        "downstream alerting does not act on them), so the uplift of acting can be measured.",
    )
    retention_campaign_id: str = Field(
        "retention", min_length=1, description="The campaign whose arms churn alerts recommend."
    )
    ab_prior: Literal["uniform", "jeffreys"] = Field(
        "uniform", description="Prior of each arm's conversion rate: Beta(1, 1) or Beta(½, ½)."
    )
    ab_min_touches_per_arm: int = Field(
        500, ge=1, description="An A/B test stops no earlier than this many touches per arm."
    )
    ab_loss_threshold: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="An A/B test stops once its leader's expected loss (in conversion rate) "
        "is below this.",
    )
    sweep_interval_s: float = Field(
        5.0, gt=0, description="How often quiet customers' label ledgers are moved on."
    )
    heartbeat_interval_days: float = Field(
        30.0, gt=0, description="A quiet customer is snapshotted for training this often."
    )
    heartbeat_horizon_days: float = Field(180.0, gt=0, description="...until quiet for this long.")
    rescore_interval_days: float | None = Field(
        7.0,
        gt=0,
        description="A quiet customer is re-scored when their newest score is this old in event"
        " time; unset: scores only at events.",
    )
    rescore_horizon_days: float = Field(
        180.0,
        gt=0,
        description="Quiet this long, a customer gets one last score marked lapsed and no more"
        " re-scores until their next event.",
    )
    sweep_max_customers: int = Field(
        500,
        ge=1,
        description="Customers one sweep visits per partition at most (the rest wait for the"
        " next), so re-scores cannot starve event scoring.",
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        None,
        ge=1,
        description="Longest a consumer fetch may wait for data; unset = Faust's 1500 ms.",
    )
    broker_rebalance_timeout_s: float = Field(60.0, gt=0)
    broker_session_timeout_s: float = Field(60.0, gt=0)
    broker_heartbeat_interval_s: float = Field(3.0, gt=0)
    web_port: int | None = Field(None, description="Faust web server port; unset = off.")
    web_bind: str = Field(
        "127.0.0.1",
        description="Address the web server listens on. It serves customer data "
        "(/customers/{id}, the dashboard): loopback by default; 0.0.0.0 in a container.",
    )
    data_dir: Path = Field(Path(".streamcrm"), description="Faust's local data directory.")
    log_level: str = Field("INFO")
    pseudonymise_customer_ids: bool = Field(
        False,
        description="Replace every customer id at the edge by a keyed pseudonym (needs "
        "privacy_key): state, scores and models never hold the ids.",
    )
    privacy_key: SecretStr | None = Field(
        None,
        description="Key of the HMAC that names erased customers in the block list and audit "
        "trail; unset = a stand-in derived from the namespace (ids then only as hidden as "
        "they are hard to guess). Set it in production and keep it stable.",
    )
    # Alert rules (docs/alerts.md): each enter/leave pair is a hysteresis band.
    alert_churn_enter: float = Field(
        0.7, ge=0, le=1, description="churn_risk is raised when P(churn) reaches this..."
    )
    alert_churn_leave: float = Field(
        0.6, ge=0, le=1, description="...and re-armed when it falls below this."
    )
    alert_churn_critical: float = Field(
        0.9, ge=0, le=1, description="A churn_risk alert at or above this P(churn) is critical."
    )
    alert_value_at_risk_enter: float = Field(
        10_000.0,
        ge=0,
        description="value_at_risk is raised when P(churn) x CLV if retained reaches this "
        "(reporting currency)...",
    )
    alert_value_at_risk_leave: float = Field(
        8_000.0, ge=0, description="...and re-armed when it falls below this."
    )
    alert_satisfaction_drop_enter: float = Field(
        0.15,
        ge=0,
        le=1,
        description="satisfaction_drop is raised when recent satisfaction falls this far below "
        "the customer's mean (both on a 0-1 scale)...",
    )
    alert_satisfaction_drop_leave: float = Field(
        0.05, ge=0, le=1, description="...and re-armed when the gap closes below this."
    )
    alert_cooldown_days: float = Field(
        7.0,
        ge=0,
        description="Event time after an alert before the customer can get another of its kind.",
    )
    alert_segment_confirm_scores: int = Field(
        4,
        ge=1,
        description="Scores in a row a new segment must hold before segment_change is raised.",
    )

    @model_validator(mode="after")
    def _retention_outlives_the_churn_window(self) -> Settings:
        if self.customer_retention_days is None:
            return self
        settled_after = timedelta(
            days=self.heartbeat_horizon_days + self.churn_window_days,
            hours=self.allowed_lateness_hours,
        )
        if timedelta(days=self.customer_retention_days) <= settled_after:
            raise ConfigurationError(
                f"customer_retention_days ({self.customer_retention_days:g}) must exceed the "
                f"heartbeat horizon ({self.heartbeat_horizon_days:g} days) plus the churn "
                f"window ({self.churn_window_days:g} days) plus the allowed lateness "
                f"({self.allowed_lateness_hours:g} h), or customers expire before their churn "
                "labels are settled"
            )
        return self

    @model_validator(mode="after")
    def _alert_bands_have_enter_above_leave(self) -> Settings:
        try:
            self.alert_rules  # noqa: B018 - built only to check it
        except ValueError as error:
            raise ConfigurationError(f"alert thresholds: {error}") from None
        return self

    @model_validator(mode="after")
    def _pseudonyms_need_a_key(self) -> Settings:
        if self.pseudonymise_customer_ids and self.privacy_key is None:
            raise ConfigurationError(
                "pseudonymise_customer_ids needs privacy_key: an unkeyed hash of an id that is "
                "easy to guess hides nothing"
            )
        return self

    @property
    def pseudonymise(self) -> Callable[[str], str] | None:
        """The edge's id replacement, when pseudonymisation is on."""
        key = self.privacy_key_bytes
        if not self.pseudonymise_customer_ids or key is None:
            return None
        return partial(pseudonym, key)

    @property
    def privacy_key_bytes(self) -> bytes | None:
        return self.privacy_key.get_secret_value().encode() if self.privacy_key else None

    @property
    def max_event_time_skew(self) -> timedelta | None:
        hours = self.max_event_time_skew_hours
        return timedelta(hours=hours) if hours is not None else None

    @property
    def customer_retention(self) -> timedelta | None:
        days = self.customer_retention_days
        return timedelta(days=days) if days is not None else None

    @model_validator(mode="after")
    def _reporting_currency_has_rate_one(self) -> Settings:
        if self.exchange_rates.get(self.reporting_currency) != 1.0:
            raise ConfigurationError(
                f"exchange_rates must map the reporting currency {self.reporting_currency} to 1.0"
            )
        return self

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _protocol_names_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _no_password_in_the_redis_url(cls, data: Any) -> Any:
        return _password_out_of_the_redis_url(data)

    @model_validator(mode="after")
    def _connection_security_is_consistent(self) -> Settings:
        _check_kafka_security(self)
        _check_redis_tls(self)
        return self

    @property
    def redis_url_for_logs(self) -> str | None:
        """``redis_url`` as log lines and messages show it: any password as ``***``."""
        if self.redis_url is None:
            return None
        return redact_url(self.redis_url, password_configured=self.redis_password is not None)

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment once (the only place that does)."""
        return cls()

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def alert_rules(self) -> AlertRules:
        """The alert thresholds; CLV if retained uses the scores' discount rate and horizon."""
        return AlertRules(
            churn_enter=self.alert_churn_enter,
            churn_leave=self.alert_churn_leave,
            churn_critical=self.alert_churn_critical,
            value_at_risk_enter=self.alert_value_at_risk_enter,
            value_at_risk_leave=self.alert_value_at_risk_leave,
            satisfaction_drop_enter=self.alert_satisfaction_drop_enter,
            satisfaction_drop_leave=self.alert_satisfaction_drop_leave,
            cooldown=timedelta(days=self.alert_cooldown_days),
            segment_confirm_scores=self.alert_segment_confirm_scores,
            discount_rate=self.discount_rate,
            horizon_years=self.clv_horizon_years,
        )

    @property
    def scoring(self) -> ScoringConfig:
        return ScoringConfig(
            churn_window=timedelta(days=self.churn_window_days),
            heartbeat_interval=timedelta(days=self.heartbeat_interval_days),
            heartbeat_horizon=timedelta(days=self.heartbeat_horizon_days),
            rescore_interval=(
                None
                if self.rescore_interval_days is None
                else timedelta(days=self.rescore_interval_days)
            ),
            rescore_horizon=timedelta(days=self.rescore_horizon_days),
            discount_rate=self.discount_rate,
            horizon_years=self.clv_horizon_years,
            rules=StateRules(
                allowed_lateness=timedelta(hours=self.allowed_lateness_hours),
                attribution_window=timedelta(days=self.attribution_window_days),
                reporting_currency=self.reporting_currency,
                exchange_rates=dict(self.exchange_rates),
            ),
            alerts=self.alert_rules,
            alert_control_share=self.alert_control_share,
        )

    @property
    def retention_plan(self) -> RetentionPlan:
        """What churn alerts carry before any campaign figures are read: the control share."""
        return RetentionPlan(self.alert_control_share, self.retention_campaign_id)

    @property
    def ab_test_rules(self) -> ABTestRules:
        return ABTestRules(
            prior=JEFFREYS_PRIOR if self.ab_prior == "jeffreys" else UNIFORM_PRIOR,
            min_touches_per_arm=self.ab_min_touches_per_arm,
            loss_threshold=self.ab_loss_threshold,
            attribution_window=timedelta(days=self.attribution_window_days),
        )

    def for_local_broker(self, kafka_bootstrap: str, redis_url: str) -> Settings:
        """These settings pointed at embedded services (``embedded_broker``), with short
        group timeouts.

        Against Tansu a group join waits about half the rebalance timeout, so local runs use
        a few seconds; production keeps Kafka-appropriate values. Tansu also answers a fetch
        only when its wait runs out, not when data arrives, so local consumers of Tansu wait
        10 ms at most (see docs/tansu.md); Apache Kafka answers as data arrives and keeps
        Faust's wait. Local runs (demos, tests) also checkpoint and sweep every 2 s, so a
        short demo scores with a learning model.
        """
        fetch_max_wait_ms = self.kafka_fetch_max_wait_ms
        if self.embedded_broker == "tansu":
            fetch_max_wait_ms = fetch_max_wait_ms or LOCAL_FETCH_MAX_WAIT_MS
        return self.model_copy(
            update={
                "kafka_bootstrap": kafka_bootstrap,
                "redis_url": redis_url,
                "broker_rebalance_timeout_s": 4.0,
                "broker_session_timeout_s": 6.0,
                "broker_heartbeat_interval_s": 1.0,
                "kafka_fetch_max_wait_ms": fetch_max_wait_ms,
                "model_checkpoint_interval_s": min(self.model_checkpoint_interval_s, 2.0),
                "sweep_interval_s": min(self.sweep_interval_s, 2.0),
            }
        )


def _password_out_of_the_redis_url(data: Any) -> Any:
    """Move a password written in ``redis_url`` into ``redis_password`` (a SecretStr), so
    that no repr, dump or log of the settings carries it."""
    if not isinstance(data, dict) or not isinstance(data.get("redis_url"), str):
        return data
    url, password = split_url_password(data["redis_url"])
    username = url_username(url)
    if username is not None and data.get("redis_username") not in (None, username):
        raise ConfigurationError(
            "two Redis user names: one in redis_url and another in redis_username; give it once"
        )
    if password is None:
        return data
    if data.get("redis_password") is not None:
        raise ConfigurationError(
            "two Redis passwords: one in redis_url and another in redis_password; "
            "give it once (STREAMCRM_REDIS_PASSWORD keeps it out of the URL)"
        )
    return {**data, "redis_url": url, "redis_password": password}


def _check_kafka_security(settings: Settings) -> None:
    """SASL settings exactly when the protocol authenticates, TLS files only when it uses TLS,
    a key or its password only with a certificate, and every file there."""
    protocol = settings.kafka_security_protocol
    sasl = {
        "kafka_sasl_mechanism": settings.kafka_sasl_mechanism,
        "kafka_sasl_username": settings.kafka_sasl_username,
        "kafka_sasl_password": settings.kafka_sasl_password,
    }
    tls_files = {
        "kafka_ssl_cafile": settings.kafka_ssl_cafile,
        "kafka_ssl_certfile": settings.kafka_ssl_certfile,
        "kafka_ssl_keyfile": settings.kafka_ssl_keyfile,
    }
    tls = {**tls_files, "kafka_ssl_password": settings.kafka_ssl_password}
    if protocol in SASL_PROTOCOLS:
        missing = [name for name, value in sasl.items() if not value]
        if missing:
            raise ConfigurationError(
                f"kafka_security_protocol {protocol} needs kafka_sasl_mechanism, "
                f"kafka_sasl_username and kafka_sasl_password; missing: {', '.join(missing)}"
            )
    elif given := [name for name, value in sasl.items() if value is not None]:
        raise ConfigurationError(
            f"{', '.join(given)} set, but kafka_security_protocol is {protocol}, which "
            "does not authenticate: use SASL_SSL (or SASL_PLAINTEXT)"
        )
    if protocol not in TLS_PROTOCOLS and (
        given := [name for name, value in tls.items() if value is not None]
    ):
        raise ConfigurationError(
            f"{', '.join(given)} set, but kafka_security_protocol is {protocol}, which "
            "does not use TLS: use SSL or SASL_SSL"
        )
    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        raise ConfigurationError("kafka_ssl_keyfile needs kafka_ssl_certfile")
    if settings.kafka_ssl_password is not None and settings.kafka_ssl_certfile is None:
        raise ConfigurationError("kafka_ssl_password needs kafka_ssl_certfile (and its key)")
    _files_exist(tls_files)


def _check_redis_tls(settings: Settings) -> None:
    """Redis TLS files only with a rediss:// URL, a key or its password only with a
    certificate, and every file there."""
    tls_files = {
        "redis_ssl_ca_certs": settings.redis_ssl_ca_certs,
        "redis_ssl_certfile": settings.redis_ssl_certfile,
        "redis_ssl_keyfile": settings.redis_ssl_keyfile,
    }
    tls = {**tls_files, "redis_ssl_password": settings.redis_ssl_password}
    given = [name for name, value in tls.items() if value is not None]
    if given and not (settings.redis_url or "").startswith("rediss://"):
        raise ConfigurationError(
            f"{', '.join(given)} set, but redis_url is not a rediss:// URL "
            f"({settings.redis_url_for_logs or 'unset: the embedded redis-server has no TLS'})"
        )
    if settings.redis_ssl_keyfile is not None and settings.redis_ssl_certfile is None:
        raise ConfigurationError("redis_ssl_keyfile needs redis_ssl_certfile")
    if settings.redis_ssl_password is not None and settings.redis_ssl_certfile is None:
        raise ConfigurationError("redis_ssl_password needs redis_ssl_certfile (and its key)")
    if settings.redis_cluster and settings.redis_ssl_password is not None:
        raise ConfigurationError(
            "redis_ssl_password is not supported with redis_cluster (redis-py's cluster client "
            "takes no key password): give an unencrypted redis_ssl_keyfile"
        )
    if settings.redis_cluster and settings.redis_url is None:
        raise ConfigurationError(
            "redis_cluster needs redis_url (a node of the cluster): the embedded "
            "redis-server is a single Redis"
        )
    _files_exist(tls_files)
