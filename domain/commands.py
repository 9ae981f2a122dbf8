"""The two incoming events as commands in the domain's vocabulary, parsed from the wire once.

A handler receives one of these, never the message it came in: the ids are typed, the stage
and outcome are enums, the catalog is already a valid reservation request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from domain.catalog import CatalogReservation
from domain.values import ImageGroupId, StageName, StageOutcome


@dataclass(frozen=True, slots=True)
class EventIds:
    """Who an event is: its own id, its job, and the correlation it carries along."""

    event_id: str
    job_id: str
    correlation_id: str | None = None
    #: What it answers: the envelope's causation_id, else a stage result's request_event_id.
    causation_id: str | None = None
    #: Which delivery of the event this is: 1 the first, then each retry and redelivery.
    delivery: int = 1


@dataclass(frozen=True, slots=True)
class ReserveCatalog:
    """`catalog.parsed`: reserve the catalog's group id for the job (its roles and images)."""

    ids: EventIds
    catalog: CatalogReservation


@dataclass(frozen=True, slots=True)
class RecordStageResult:
    """`stage.finished`: the pipeline reports how a stage of the job's group went."""

    ids: EventIds
    stage: StageName
    outcome: StageOutcome
    image_group_id: ImageGroupId | None = None
    attempt: int | None = None
    request_event_id: str | None = None
    error_code: str | None = None
    error_summary: str | None = None
    result_detail: dict[str, Any] | None = None


def on_delivery(
    command: ReserveCatalog | RecordStageResult, delivery: int
) -> ReserveCatalog | RecordStageResult:
    """The command as this delivery of its event carries it (the inbox keeps the count)."""
    return replace(command, ids=replace(command.ids, delivery=delivery))
