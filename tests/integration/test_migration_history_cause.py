"""Migration 0006 adds the history's causes and the inbox's trace columns, and backfills what
the rows still tell; it goes down again cleanly. On PostgreSQL and on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from persistence.migrate import downgrade, upgrade
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
JOBS = {g: f"00000000-0000-4000-8000-00000000000{n}" for n, g in enumerate("abcd", 1)}
CAUSE = (
    "cause_kind, cause_event_type, cause_stage, cause_attempt, cause_outcome, "
    "cause_error_code, cause_error_summary, cause_command"
)

#: group -> its moves before the migration: (from, to, event_id).
MOVES = {
    # built, deploy fails (inbox still holds it, its stage row was overwritten), redeploy,
    # attempt 2 fails with nothing left to say whether an event or a deadline did it,
    # redeploy, attempt 3 deploys (its stage row is the latest) and auto-advances.
    "a": [
        (None, "BUILT", "e-build"),
        ("BUILT", "DEPLOYING", "e-build"),
        ("DEPLOYING", "FAILED", "e-fail-1"),
        ("FAILED", "DEPLOYING", "c-redeploy-2"),
        ("DEPLOYING", "FAILED", "x-fail-2"),
        ("FAILED", "DEPLOYING", "c-redeploy-3"),
        ("DEPLOYING", "DEPLOYED", "e-ok-3"),
        ("DEPLOYED", "RESTARTING", "e-ok-3"),
    ],
    # without auto-advance: the operator requested deploy, then cleaned up after a failure
    "b": [
        (None, "BUILT", "e-build-b"),
        ("BUILT", "DEPLOYING", "c-request"),
        ("DEPLOYING", "FAILED", "e-fail-b"),
        ("FAILED", "CLEANED", "c-clean"),
    ],
    # a deadline passed (its stage row says STAGE_TIMEOUT)
    "c": [
        (None, "BUILT", "e-build-c"),
        ("BUILT", "DEPLOYING", "e-build-c"),
        ("DEPLOYING", "FAILED", "c-deadline"),
    ],
}
#: (job, stage, state, attempt, event_id, error_code, error_summary): each stage's latest row.
STAGES = [
    ("a", "build-image-x86_64", "succeeded", 1, "e-build", None, None),
    ("a", "deploy", "succeeded", 3, "e-ok-3", None, None),
    ("a", "pxe-boot", "requested", 3, "out-1", None, None),
    ("b", "deploy", "failed", 1, "e-fail-b", "E_DEPLOY", "node n2 down"),
    ("c", "deploy", "failed", 1, "c-deadline", "STAGE_TIMEOUT", "no deploy result by then"),
]
INBOX = ["e-fail-1", "e-build-b"]


def _event(
    stage: str, attempt: int, outcome: str, code: Any = None, why: Any = None
) -> tuple[Any, ...]:
    return ("event", "stage.finished", stage, attempt, outcome, code, why, None)


def _operator(stage: str | None, attempt: int | None, command: str) -> tuple[Any, ...]:
    return ("operator", None, stage, attempt, None, None, None, command)


EXPECTED = {
    "a": [
        _event("build-image-x86_64", 1, "succeeded"),
        _event("build-image-x86_64", 1, "succeeded"),
        _event("deploy", 1, "failed"),  # its error went with the overwritten stage row
        _operator("deploy", 2, "request deploy"),
        (None, None, "deploy", 2, "failed", None, None, None),
        _operator("deploy", 3, "request deploy"),
        _event("deploy", 3, "succeeded"),
        _event("deploy", 3, "succeeded"),
    ],
    "b": [
        _event("build-image", 1, "succeeded"),
        _operator("deploy", 1, "request deploy"),
        _event("deploy", 1, "failed", "E_DEPLOY", "node n2 down"),
        _operator(None, None, "cleanup"),
    ],
    "c": [
        _event("build-image", 1, "succeeded"),
        _event("build-image", 1, "succeeded"),
        (
            "deadline",
            None,
            "deploy",
            1,
            "failed",
            "STAGE_TIMEOUT",
            "no deploy result by then",
            None,
        ),
    ],
}


def _seed(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for n, (group, moves) in enumerate(MOVES.items()):
                conn.execute(
                    text(
                        "INSERT INTO image_groups (id, job_id, status, attempt, created_at, "
                        "updated_at) VALUES (:g, :j, :s, 1, :t, :t)"
                    ),
                    {"g": group, "j": JOBS[group], "s": moves[-1][1], "t": T0},
                )
                for m, (old, new, event_id) in enumerate(moves):
                    conn.execute(
                        text(
                            "INSERT INTO transition_history (image_group_id, from_status, "
                            "to_status, event_id, at) VALUES (:g, :old, :new, :e, :t)"
                        ),
                        {"g": group, "old": old, "new": new, "e": event_id,
                         "t": T0 + timedelta(minutes=10 * n + m)},
                    )  # fmt: skip
            for job, stage, state, attempt, event_id, code, why in STAGES:
                conn.execute(
                    text(
                        "INSERT INTO stages (job_id, stage, state, attempt, event_id, error_code, "
                        "error_summary, updated_at) VALUES (:j, :s, :st, :a, :e, :c, :w, :t)"
                    ),
                    {"j": JOBS[job], "s": stage, "st": state, "a": attempt, "e": event_id,
                     "c": code, "w": why, "t": T0},
                )  # fmt: skip
            for event_id in INBOX:
                conn.execute(
                    text(
                        "INSERT INTO processed_events (event_id, task_name, outcome, processed_at)"
                        " VALUES (:e, 'imagegroups.stage_finished', 'applied', :t)"
                    ),
                    {"e": event_id, "t": T0},
                )
    finally:
        engine.dispose()


def _causes(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT image_group_id, {CAUSE} FROM transition_history ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[tuple[Any, ...]]] = {}
    for group, *cause in rows:
        found.setdefault(group, []).append(tuple(cause))
    return found


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'cause.db'}"
        return
    with fresh_database("cause_migration") as pg_url:
        yield pg_url


def test_the_migration_backfills_each_moves_cause_from_what_the_rows_still_tell(url: str) -> None:
    upgrade(url, "0005")
    _seed(url)

    upgrade(url, "0006")

    assert _causes(url) == EXPECTED


def test_the_migration_goes_down_to_0005_and_up_again(url: str) -> None:
    upgrade(url, "0005")
    before = _columns(url, "transition_history"), _columns(url, "processed_events")
    _seed(url)
    upgrade(url, "0006")
    assert {"cause_kind", "cause_command"} <= _columns(url, "transition_history")
    assert {"job_id", "causation_id", "duplicates"} <= _columns(url, "processed_events")

    downgrade(url, "0005")

    assert (_columns(url, "transition_history"), _columns(url, "processed_events")) == before
    upgrade(url, "0006")
    assert _causes(url) == EXPECTED  # the history survived the trip; the backfill ran again
