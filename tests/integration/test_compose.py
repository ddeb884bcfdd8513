"""docker-compose.yml, the image and the settings object cannot drift apart.

The compose file is resolved by a real compose implementation (Debian's ``docker-compose``
validates and interpolates without a container engine, which these machines lack); the test
then reads the resolved file and checks it against ``streamcrm.settings.Settings``. The
topic-init step runs for real: ``streamcrm topics`` with the compose file's environment, pointed
at the test broker, must create every topic as the workers expect it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient

from streamcrm.learner.process import alive_file
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.settings import Settings, Topics
from streamcrm.worker.metrics import METRIC_NAMES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"REDIS_PASSWORD": "compose-test-password", "STREAMCRM_PRIVACY_KEY": "compose-key"}


def compose_config(extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on the project's compose file, with only ``extra_env`` set."""
    compose = shutil.which("docker-compose")
    assert compose is not None, "docker-compose is missing: ./dev installs Debian's package"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return subprocess.run(
        [
            compose,
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def streamcrm_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    return {
        name: str(value) for name, value in environment.items() if name.startswith("STREAMCRM_")
    }


def settings_from(environment: dict[str, str]) -> Settings:
    """The settings a container with ``environment`` would read (and nothing else)."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("STREAMCRM_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(environment)
    try:
        return Settings()
    finally:
        for name in environment:
            del os.environ[name]
        os.environ.update(saved)


def test_compose_refuses_to_start_without_the_redis_password_and_privacy_key() -> None:
    result = compose_config({})
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr or "STREAMCRM_PRIVACY_KEY" in result.stderr


def test_compose_has_every_production_service_with_a_health_check(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    assert {"kafka", "redis", "topics", "worker", "learner", "simulator", "prometheus"} <= set(
        services
    )
    for name in ("kafka", "redis", "worker", "prometheus"):
        assert services[name]["healthcheck"]["test"], name
    assert services["simulator"]["profiles"] == ["simulator"]


def test_kafka_runs_in_kraft_mode_from_the_official_image(resolved: dict[str, Any]) -> None:
    kafka = resolved["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_redis_keeps_an_append_only_file_behind_a_password(resolved: dict[str, Any]) -> None:
    command = resolved["services"]["redis"]["command"]
    flags = {
        flag: value
        for flag, value in zip(command, command[1:], strict=False)
        if flag.startswith("--")
    }
    assert flags["--appendonly"] == "yes"
    assert flags["--requirepass"] == SECRETS["REDIS_PASSWORD"]
    # The per-customer memory measured by the benchmark assumes listpack hashes.
    assert int(flags["--hash-max-listpack-value"]) >= 1024
    assert any(
        volume.split(":")[1] == "/data" for volume in resolved["services"]["redis"]["volumes"]
    )


def test_every_streamcrm_variable_in_compose_is_a_setting_and_parses(
    resolved: dict[str, Any],
) -> None:
    known = {f"STREAMCRM_{name.upper()}" for name in Settings.model_fields}
    for name, service in resolved["services"].items():
        environment = streamcrm_environment(service)
        assert set(environment) <= known, f"{name}: unknown {set(environment) - known}"
    worker = settings_from(streamcrm_environment(resolved["services"]["worker"]))
    assert worker.kafka_bootstrap == "kafka:9092"
    assert worker.redis_password is not None
    assert worker.redis_password.get_secret_value() == SECRETS["REDIS_PASSWORD"]
    assert worker.privacy_key is not None
    assert worker.web_port is not None
    assert worker.web_bind == "0.0.0.0"  # a container's loopback is unreachable from outside


def test_workers_and_topic_init_share_one_configuration(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    worker = streamcrm_environment(services["worker"])
    topics = streamcrm_environment(services["topics"])
    for name in (
        "STREAMCRM_KAFKA_BOOTSTRAP",
        "STREAMCRM_TOPIC_PREFIX",
        "STREAMCRM_PARTITIONS",
        "STREAMCRM_REPLICATION_FACTOR",
    ):
        assert worker[name] == topics[name], name
    assert services["topics"]["command"] == ["streamcrm", "topics"]
    depends = services["worker"]["depends_on"]
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_one_learner_process_learns_for_workers_that_run_no_learner_themselves(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    learner_service = services["learner"]
    assert learner_service["command"] == ["streamcrm", "learner"]
    assert learner_service["image"] == services["worker"]["image"]
    assert learner_service["healthcheck"]["test"]
    assert "deploy" not in learner_service  # exactly one: never replicated
    depends = learner_service["depends_on"]
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"
    worker = settings_from(streamcrm_environment(services["worker"]))
    learner = settings_from(streamcrm_environment(learner_service))
    assert worker.learner == "process"
    assert learner.topics.model_updates == worker.topics.model_updates
    assert (learner.redis_url, learner.redis_namespace) == (
        worker.redis_url,
        worker.redis_namespace,
    )
    assert learner.app_id == worker.app_id  # the workers' group, read once when migrating
    health = learner_service["healthcheck"]["test"][-1]
    assert str(alive_file(learner)) in health


def test_workers_scale_without_a_fixed_name_and_prometheus_finds_them_all(
    resolved: dict[str, Any],
) -> None:
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker  # --scale worker=N needs generated names
    port = settings_from(streamcrm_environment(worker)).web_port
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["port"] == port


def test_the_image_installs_pinned_dependencies_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "--no-index" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0"))
    pinned = {
        re.split(r"==", line)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert all(
        "==" in line
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in requirements.lock (./dev lock)"


def test_topic_init_creates_every_topic_the_workers_expect(
    resolved: dict[str, Any], services: EmbeddedServices, unique_name: str
) -> None:
    environment = streamcrm_environment(resolved["services"]["topics"])
    environment |= {
        "STREAMCRM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "STREAMCRM_TOPIC_PREFIX": unique_name,
        "STREAMCRM_REDIS_URL": services.redis_url,
    }
    environment.pop("STREAMCRM_REDIS_PASSWORD")  # the test's redis-server has none
    result = subprocess.run(
        [sys.executable, "-m", "streamcrm", "topics"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    topics = Topics(unique_name)
    partitions = int(environment["STREAMCRM_PARTITIONS"])
    expected = {name: 1 if name == topics.model_updates else partitions for name in topics.all}
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    described: dict[str, int] = {}
    try:
        # Apache Kafka answers CreateTopics before every partition is in the metadata it
        # describes (0 partitions for a moment): read until it settles, 30 s at most.
        deadline = time.monotonic() + 30
        while described != expected and time.monotonic() < deadline:
            described = {
                topic["name"]: len(topic["partitions"])
                for topic in admin.describe_topics(list(topics.all))
            }
            time.sleep(0.2)
    finally:
        admin.close()
    # Tansu does not report topic configs (docs/tansu.md): that crm.scores is created
    # compacted is checked on the specs (streamcrm.services.kafka.topic_specs doctest).
    assert described == expected


def test_the_optional_grafana_dashboard_reads_only_metrics_the_workers_expose(
    resolved: dict[str, Any],
) -> None:
    grafana = resolved["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"] and grafana["healthcheck"]["test"]
    provisioning = ROOT / "deploy/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/streamcrm.json").read_text())
    exposed = set(METRIC_NAMES) | {
        f"{name}_{part}" for name in METRIC_NAMES for part in ("bucket", "sum", "count")
    }
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\bstreamcrm_[a-z_]+", target["expr"]))
            assert used and used <= exposed, (panel["title"], used - exposed)
