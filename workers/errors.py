"""The worker's own errors, and which failures are worth a retry (the policy that decides
what becomes of them is workers/edge/decide.py)."""

from __future__ import annotations

import psycopg
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from domain import CatalogNotParsedError, DomainError, GroupNotCreatedError, InvalidValueError
from workers.edge.decide import Failure

# SQLSTATEs that mean "try again": serialization failure, deadlock, lock not available,
# and the connection-loss / shutdown family.
_TRANSIENT_SQLSTATES = {
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
    "08000",
    "08003",
    "08006",
    "08001",
    "08004",
}


class InvalidEventError(Exception):
    """The message is not a valid event of the contract; retrying cannot help."""


class DeadLetteredError(Exception):
    """Raised by a task after it stored its event as a dead letter; Flower shows it failed."""


class DeadLetterLostError(Exception):
    """Raised by a task whose event could not be stored even as a minimal dead letter: the
    message is given up (acked) after a CRITICAL log line that holds it."""


class AttemptsExhaustedError(Exception):
    """The event was delivered more often than IMAGEGROUPS_MAX_ATTEMPTS allows."""


class UndecodableMessageError(Exception):
    """The body could not be decoded (not JSON, or a refused serializer such as pickle)."""


class UnknownTaskError(Exception):
    """No task of that name runs in this worker."""


class InvalidTaskMessageError(Exception):
    """The message is not a well-formed Celery task message this worker accepts."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, CatalogNotParsedError | GroupNotCreatedError):
        return True  # the missing event may still be on its way
    if isinstance(exc, DomainError | InvalidEventError | InvalidValueError):
        return False
    if isinstance(exc, OperationalError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None)
        return exc.connection_invalidated or state in _TRANSIENT_SQLSTATES
    if isinstance(exc, psycopg.Error):
        # A psycopg error that reaches us unwrapped (persistence/db.py wraps what its
        # pipeline raises in SQLAlchemy's DBAPIError, as SQLAlchemy would).
        return isinstance(exc, psycopg.OperationalError) or exc.sqlstate in _TRANSIENT_SQLSTATES
    if isinstance(exc, KombuOperationalError | RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def failure_of(exc: BaseException) -> Failure:
    """What a failure is to the policy: past the attempt limit, worth a retry, or neither."""
    if isinstance(exc, AttemptsExhaustedError):
        return Failure.EXHAUSTED
    return Failure.TRANSIENT if is_transient(exc) else Failure.PERMANENT


__all__ = [
    "AttemptsExhaustedError",
    "DeadLetterLostError",
    "DeadLetteredError",
    "InvalidEventError",
    "InvalidTaskMessageError",
    "UndecodableMessageError",
    "UnknownTaskError",
    "failure_of",
    "is_transient",
]
