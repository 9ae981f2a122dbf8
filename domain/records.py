"""Plain records the worker keeps beside the aggregate: stages, outbox, dead letters, jobs."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.values import PipelinePhase, StageName


class StageState(enum.StrEnum):
    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    pipeline_phase: PipelinePhase


@dataclass(frozen=True, slots=True)
class StageRecord:
    """The latest state of one stage of one job."""

    job_id: str
    stage: StageName
    state: StageState
    attempt: int
    event_id: str
    updated_at: datetime
    result_detail: dict[str, Any] | None = None
    error_code: str | None = None
    error_summary: str | None = None


def latest_per_job(records: Iterable[StageRecord]) -> dict[str, StageRecord]:
    """Each job's record of its highest attempt, the latest one on a tie.

    A redeploy starts a new attempt, and earlier stages keep the rows of older attempts, so
    the newest attempt is what tells why a group is where it is now.
    """
    latest: dict[str, StageRecord] = {}
    for record in records:
        seen = latest.get(record.job_id)
        if seen is None or (record.attempt, record.updated_at) > (seen.attempt, seen.updated_at):
            latest[record.job_id] = record
    return latest


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """An incoming event the worker handled: its outcome and who sent it after what.

    `deliveries` counts every delivery: those before it was handled (retries, redeliveries)
    and `duplicates`, those that found it already handled. `job_id` and `causation_id` are
    None on rows written before migration 0006.
    """

    event_id: str
    task_name: str
    outcome: str
    processed_at: datetime
    job_id: str | None = None
    causation_id: str | None = None
    deliveries: int = 1
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A follow-on event written in the transition's transaction, published after commit."""

    event_id: str
    task_name: str
    queue: str
    body: dict[str, Any]
    image_group_id: str
    created_at: datetime
    sent_at: datetime | None = None


class DeadLetterStatus(enum.StrEnum):
    DEAD = "dead"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event the worker gave up on, kept whole so an operator can fix the cause and replay."""

    id: int | None
    task_name: str
    event_id: str | None
    body: str
    content_type: str | None
    error_type: str
    error_message: str
    traceback: str | None
    attempts: int
    status: DeadLetterStatus
    first_failed_at: datetime
    last_failed_at: datetime
    replay_of: int | None = None
    replayed_at: datetime | None = None
