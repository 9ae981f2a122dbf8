"""docker-compose.yml is valid, and runs only commands the integration tests run verbatim."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack import (
    FLOWER_COMMAND,
    HEALTH_COMMAND,
    MIGRATE_COMMAND,
    SIMULATOR_COMMAND,
    WORKER_COMMAND,
)
from workers.settings import Settings

pytestmark = pytest.mark.integration

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _compose_cli() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_file_is_valid_for_docker_compose() -> None:
    done = subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE), "config", "-q"],
        env={"FLOWER_BASIC_AUTH": "ops:secret", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _resolved(**env: str) -> dict[str, Any]:
    """The services as docker-compose resolves them (variables and defaults filled in)."""
    done = subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE), "config"],
        env={"FLOWER_BASIC_AUTH": "ops:secret", "PATH": "/usr/local/bin:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    return services


def _host_ip(port: str | dict[str, Any]) -> str | None:
    """Where a published port listens on the host: short (`IP:HOST:CONTAINER`) or long form."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    return parts[0] if len(parts) == 3 else None


def test_every_published_port_listens_on_the_hosts_loopback_only() -> None:
    services = _resolved()
    published = {
        name: [_host_ip(port) for port in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published["flower"] and published["prometheus"]  # the operator's two pages
    assert {name: ips for name, ips in published.items() if set(ips) - {"127.0.0.1"}} == {}
    assert all(s.get("network_mode") != "host" for s in services.values())


@pytest.mark.parametrize("password", [None, "s3cret-from-env"])
def test_redis_requires_a_password_that_every_other_service_uses(password: str | None) -> None:
    services = _resolved(**({} if password is None else {"REDIS_PASSWORD": password}))
    redis = services["redis"]
    required = redis["command"][redis["command"].index("--requirepass") + 1]
    assert required and required == (password or required)
    assert redis["environment"]["REDISCLI_AUTH"] == required  # the health check's
    users = {
        name: service["environment"]["CELERY_BROKER_URL"]
        for name, service in services.items()
        if "CELERY_BROKER_URL" in service.get("environment", {})
    }
    assert set(users) == {"migrate", "worker", "flower", "simulator"}
    assert set(users.values()) == {f"redis://:{required}@redis:6379/0"}


def test_the_env_example_names_every_secret_compose_reads() -> None:
    example = (COMPOSE.parent / ".env.example").read_text()
    names = set(re.findall(r"\$\{(\w+)[:?-]", COMPOSE.read_text()))
    assert names == {"FLOWER_BASIC_AUTH", "REDIS_PASSWORD"}
    assert {
        line.split("=", 1)[0] for line in example.splitlines() if line and line[0] != "#"
    } == names


def test_compose_refuses_to_start_flower_without_basic_auth() -> None:
    done = subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE), "config", "-q"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH" in done.stderr


def test_every_compose_command_is_one_the_tests_run() -> None:
    services = _services()
    assert services["migrate"]["command"] == MIGRATE_COMMAND
    assert services["worker"]["command"] == WORKER_COMMAND
    assert services["worker"]["healthcheck"]["test"] == ["CMD", *HEALTH_COMMAND]
    assert services["flower"]["command"] == FLOWER_COMMAND
    assert services["simulator"]["command"] == SIMULATOR_COMMAND


def test_compose_flower_listens_on_every_container_interface_behind_basic_auth() -> None:
    flower = _services()["flower"]["environment"]
    assert flower["FLOWER_ADDRESS"] == "0.0.0.0"
    assert flower["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert "IMAGEGROUPS_FLOWER_UNAUTHENTICATED" not in flower


def test_compose_orders_start_up_on_health_and_a_finished_migration() -> None:
    services = _services()
    redis = services["redis"]["command"]
    assert "--appendonly" in redis and redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    worker = services["worker"]["depends_on"]
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all("healthcheck" in services[name] for name in ("redis", "postgres", "worker"))


def test_compose_gives_a_stopping_worker_longer_than_the_task_time_limit() -> None:
    grace = _services()["worker"]["stop_grace_period"]
    default_limit = Settings.model_fields["task_time_limit"].default
    assert grace.endswith("s") and int(grace[:-1]) > default_limit


def test_compose_prometheus_scrapes_the_worker_metrics_port_and_loads_the_alert_rules() -> None:
    services = _services()
    port = services["worker"]["environment"]["IMAGEGROUPS_METRICS_PORT"]
    prometheus = services["prometheus"]
    assert "command" not in prometheus  # the image's own, reading the mounted files
    mounts = {m.split(":")[1]: m.split(":")[0] for m in prometheus["volumes"]}
    config = yaml.safe_load((COMPOSE.parent / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    targets = [
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert targets == [f"worker:{port}"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert (COMPOSE.parent / mounts["/etc/prometheus/alerts.yml"]).is_file()
