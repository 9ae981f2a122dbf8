"""Fixtures for the integration tier: real PostgreSQL, Redis and worker subprocesses."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack, stack


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Stack]:
    """One worker (two processes), no simulator: the test publishes every stage result."""
    with stack(tmp_path, "manual") as running:
        running.start_worker("--concurrency", "2")
        yield running


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[str]:
    """A fresh RabbitMQ virtual host per test, so queues never carry messages between runs."""
    name = f"ig_test_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)
