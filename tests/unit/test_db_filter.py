"""The psycopg warning a failed pipeline's skipped rest causes is dropped; no other is."""

from __future__ import annotations

import logging

import psycopg

from persistence.db import SkippedRestFilter

TERMINATING = "error ignored terminating %r: %s"


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("psycopg", logging.WARNING, __file__, 1, msg, args, None)


def test_the_skipped_rest_of_a_failed_pipeline_is_not_a_warning() -> None:
    aborted = psycopg.errors.PipelineAborted("pipeline aborted")
    assert SkippedRestFilter().filter(_record(TERMINATING, "<Pipeline>", aborted)) is False


def test_other_psycopg_warnings_pass() -> None:
    kept = SkippedRestFilter()
    lost = psycopg.OperationalError("server closed the connection")
    assert kept.filter(_record(TERMINATING, "<Pipeline>", lost)) is True
    assert kept.filter(_record("connection %s: %s", "x", "y")) is True
    assert kept.filter(_record("no arguments")) is True


def test_the_filter_sits_on_psycopg_s_logger() -> None:
    filters = logging.getLogger("psycopg").filters
    assert any(isinstance(f, SkippedRestFilter) for f in filters)
