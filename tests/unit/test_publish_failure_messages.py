"""A publish that fails: the worker's log gets the traceback, the CLI one line with the reason."""

from __future__ import annotations

import logging

import pytest

from persistence.memory import MemoryState, MemoryUnitOfWork
from tests.unit.test_relay import NOW, FakeClock, FakePublisher, _message
from workers.cli import write_commands
from workers.outbox import OutboxRelay


def relay_failing_on(event_id: str) -> OutboxRelay:
    state = MemoryState()
    return OutboxRelay(lambda: MemoryUnitOfWork(state), FakePublisher([event_id]), FakeClock(NOW))


def test_the_relay_logs_a_failed_publish_with_its_traceback_for_the_workers_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = _message(1, NOW)

    with caplog.at_level(logging.WARNING, logger="workers.outbox"):
        sent = relay_failing_on(message.event_id).deliver([message])

    [record] = [r for r in caplog.records if r.name == "workers.outbox"]
    assert sent == 0
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)


def test_the_cli_keeps_the_reason_and_lets_no_relay_record_reach_its_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = _message(1, NOW)
    relay_logger = logging.getLogger("workers.outbox")

    with caplog.at_level(logging.DEBUG), write_commands._publish_failures() as reasons:
        sent = relay_failing_on(message.event_id).deliver([message])

    assert sent == 0
    assert reasons == ["ConnectionError: broker unreachable"]
    assert [r for r in caplog.records if r.name == "workers.outbox"] == []
    assert relay_logger.propagate is True, "the worker's logging is left as it was"
    assert not any(isinstance(h, write_commands._Failures) for h in relay_logger.handlers)
