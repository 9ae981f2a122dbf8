"""Envelope builders: what a publisher gets, including for catalogs without name or version."""

from __future__ import annotations

import uuid

from workers import outbox
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent

JOB = str(uuid.uuid4())


def test_a_catalog_without_name_or_version_builds_a_valid_event() -> None:
    event = outbox.catalog_parsed(JOB, "tiny", ["compute"], catalog_name=None, catalog_version=None)

    parsed = CatalogParsedEvent.model_validate(event)
    assert "catalog_name" not in event["payload"]
    assert parsed.payload.catalog_version is None


def test_catalog_name_and_version_go_into_the_payload_not_the_envelope() -> None:
    event = outbox.catalog_parsed(
        JOB, "tiny", ["compute"], catalog_name="tiny", catalog_version="1.0"
    )

    assert (event["payload"]["catalog_name"], event["payload"]["catalog_version"]) == (
        "tiny",
        "1.0",
    )
    assert CatalogParsedEvent.model_validate(event).payload.catalog_name == "tiny"


def test_optional_stage_fields_are_left_out_when_not_given() -> None:
    event = outbox.stage_finished(JOB, "deploy", "succeeded")

    assert event["payload"] == {"stage": "deploy", "outcome": "succeeded"}
    assert StageFinishedEvent.model_validate(event).payload.attempt is None
