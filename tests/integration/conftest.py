"""Fixtures for the integration tier: real PostgreSQL, Redis and worker subprocesses."""

from __future__ import annotations

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
