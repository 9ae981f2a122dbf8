"""`imagegroups publish`: build an incoming event, validate it here, send it, print its id."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ValidationError

from workers import outbox
from workers.cli.catalog_file import CatalogFileError, read_catalog
from workers.cli.output import CommandError, print_json
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent


def _send(event: dict[str, Any]) -> str:
    """Send through the real app; tests replace this function to see what would be sent."""
    from workers.celery import app

    # Task id = event_id, so Flower and the worker's logs name the event the same way.
    return outbox.send(app, event, task_id=event["event_id"])


def catalog_parsed(args: argparse.Namespace) -> int:
    if args.catalog is not None:
        event = _from_catalog_file(args)
    else:
        roles, images = _roles(args.role or [])
        event = outbox.catalog_parsed(
            args.job_id,
            args.image_group_id,
            roles,
            images or None,
            correlation_id=args.correlation_id,
        )
    return _validate_and_send(CatalogParsedEvent, event, args)


def stage_finished(args: argparse.Namespace) -> int:
    event = outbox.stage_finished(
        args.job_id,
        args.stage,
        args.outcome,
        image_group_id=args.image_group_id,
        attempt=args.attempt,
        request_event_id=args.request_event_id,
        detail=args.detail,
        error_code=args.error_code,
        error_summary=args.error_summary,
        correlation_id=args.correlation_id,
    )
    return _validate_and_send(StageFinishedEvent, event, args)


def _from_catalog_file(args: argparse.Namespace) -> dict[str, Any]:
    try:
        catalog = read_catalog(args.catalog)
    except CatalogFileError as exc:
        raise CommandError(str(exc)) from None
    return outbox.catalog_parsed(
        args.job_id,
        catalog.image_group_id,
        list(catalog.roles),
        catalog_name=catalog.catalog_name,
        catalog_version=catalog.catalog_version,
        correlation_id=args.correlation_id,
    )


def _roles(specs: list[str]) -> tuple[list[str], dict[str, str]]:
    """`ROLE` or `ROLE=IMAGE`, in the order given."""
    roles: list[str] = []
    images: dict[str, str] = {}
    for spec in specs:
        role, sep, image = spec.partition("=")
        roles.append(role)
        if sep:
            images[role] = image
    return roles, images


def _validate_and_send(
    model: type[BaseModel], event: dict[str, Any], args: argparse.Namespace
) -> int:
    try:
        model.model_validate(event)
    except ValidationError as exc:
        raise CommandError(f"the event would be rejected: {_problems(exc)}") from None
    event_id = _send(event)
    if args.json:
        print_json({"event_id": event_id, "event": event})
    elif args.quiet:
        print(event_id)
    else:
        print(f"event_id: {event_id}")
    return 0


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
