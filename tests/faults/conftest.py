"""Fixtures for the fault suite: real PostgreSQL, real Redis, real worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.stack import Stack, stack


@pytest.fixture(scope="module")
def shared_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker (two pool processes) that a module's tests attack one after another."""
    tmp = tmp_path_factory.mktemp("shared-worker")
    with stack(tmp, "faults") as running:
        running.start_worker("--concurrency", "2")
        yield running
