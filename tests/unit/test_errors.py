"""Which failures are retried (docs/contract.md §3), and the backoff between retries."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from domain import (
    CatalogNotParsedError,
    DuplicateImageGroupError,
    GroupNotCreatedError,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    InvalidStateTransitionError,
    InvalidValueError,
    StaleResultError,
)
from workers.edge.decide import backoff
from workers.errors import InvalidEventError, is_transient

JOB_ID = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"


class FakeDriverError(Exception):
    """What a DB-API driver raises; psycopg names the SQLSTATE `sqlstate`."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def _dbapi_error(sqlstate: str | None) -> DBAPIError:
    return DBAPIError("UPDATE image_groups SET status = ?", {}, FakeDriverError(sqlstate))


TRANSIENT: list[BaseException] = [
    CatalogNotParsedError(JOB_ID),
    GroupNotCreatedError(job_id=JOB_ID),
    OperationalError("SELECT 1", {}, FakeDriverError(None)),
    _dbapi_error("40P01"),  # deadlock detected
    _dbapi_error("40001"),  # serialization failure
    _dbapi_error("55P03"),  # lock not available
    KombuOperationalError("broker unreachable"),
    RedisConnectionError("connection refused"),
]

PERMANENT: list[BaseException] = [
    DuplicateImageGroupError("group-1", JOB_ID, "another-job"),
    ImageGroupMismatchError(JOB_ID, "group-1", "group-2"),
    ImageGroupNotFoundError(image_group_id="group-1"),
    InvalidStateTransitionError("group-1", "BUILT", "VALIDATING", ["DEPLOYING", "CLEANED"]),
    StaleResultError("group-1", "RESTARTING", "deploy", "the group already left DEPLOYING"),
    InvalidEventError("payload.roles: at least one role"),
    InvalidValueError("role must not be empty"),
    ValueError("bad value"),
    KeyError("missing"),
    _dbapi_error("23505"),  # unique violation
    _dbapi_error(None),
    IntegrityError("INSERT", {}, FakeDriverError("23503")),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}-{e}"[:60])
def test_a_transient_failure_is_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: f"{type(e).__name__}-{e}"[:60])
def test_a_permanent_failure_is_never_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_group_not_created_error_is_retried_although_a_not_found_error_is_not() -> None:
    # GroupNotCreatedError subclasses ImageGroupNotFoundError: the order of checks matters.
    assert issubclass(GroupNotCreatedError, ImageGroupNotFoundError)
    assert is_transient(GroupNotCreatedError(job_id=JOB_ID))
    assert not is_transient(ImageGroupNotFoundError(job_id=JOB_ID))


def test_a_dbapi_error_on_an_invalidated_connection_is_retried() -> None:
    exc = DBAPIError("SELECT 1", {}, FakeDriverError(None), connection_invalidated=True)

    assert is_transient(exc)


@pytest.mark.parametrize("attempt", range(1, 8))
def test_backoff_doubles_with_each_attempt_between_half_and_all_of_its_ceiling(
    attempt: int,
) -> None:
    rng = random.Random(attempt)
    ceiling = 0.5 * 2 ** (attempt - 1)

    delays = [backoff(attempt, base=0.5, cap=1000.0, rng=rng) for _ in range(200)]

    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_backoff_grows_exponentially_on_average() -> None:
    rng = random.Random(7)

    means = [
        sum(backoff(attempt, base=1.0, cap=10_000.0, rng=rng) for _ in range(500)) / 500
        for attempt in range(1, 9)
    ]

    ratios = [later / earlier for earlier, later in pairwise(means)]
    assert all(1.8 < ratio < 2.2 for ratio in ratios), ratios


@pytest.mark.parametrize("attempt", [8, 9, 20, 100, 10_000])
def test_backoff_never_exceeds_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)

    delays = [backoff(attempt, base=0.5, cap=60.0, rng=rng) for _ in range(200)]

    assert all(30.0 <= d <= 60.0 for d in delays)


def test_backoff_treats_an_attempt_below_one_as_the_first() -> None:
    delays = [backoff(0, base=2.0, cap=60.0, rng=random.Random(1)) for _ in range(50)]

    assert all(1.0 <= d <= 2.0 for d in delays)


def test_backoff_with_the_same_seed_gives_the_same_delays() -> None:
    first = [backoff(a, base=0.5, cap=60.0, rng=random.Random(3)) for a in range(1, 10)]
    second = [backoff(a, base=0.5, cap=60.0, rng=random.Random(3)) for a in range(1, 10)]

    assert first == second


def test_a_database_error_raised_at_a_pipeline_sync_is_judged_by_its_sqlstate() -> None:
    import psycopg

    class Deadlock(psycopg.errors.DeadlockDetected):
        pass

    assert is_transient(psycopg.OperationalError("server closed the connection"))
    assert is_transient(Deadlock("deadlock detected"))
    assert not is_transient(psycopg.errors.UniqueViolation("duplicate key"))
