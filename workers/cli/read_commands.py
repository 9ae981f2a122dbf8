"""Read commands: `status`, `list` and `history` of image groups."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from domain import (
    ImageGroup,
    ImageGroupId,
    ImageGroupNotFoundError,
    ImageGroupStatus,
    StageRecord,
    UnitOfWork,
)
from workers.cli import history_view
from workers.cli.output import iso, print_fields, print_json, print_table
from workers.runtime.root import runtime


def group_document(group: ImageGroup, failure: StageRecord | None = None) -> dict[str, Any]:
    """The status object of docs/contract.md §4; a FAILED group's carries why it failed."""
    images = sorted(group.images, key=lambda image: image.role.value)
    document: dict[str, Any] = {
        "image_group_id": group.id.value,
        "job_id": group.job_id,
        "status": group.status.value,
        "attempt": group.attempt,
        "images": [{"role": i.role.value, "image_name": i.image_name} for i in images],
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }
    if group.status is ImageGroupStatus.FAILED:
        document["failure"] = failure_document(failure)
    return document


def failure_document(failure: StageRecord | None) -> dict[str, Any] | None:
    if failure is None:
        return None  # FAILED with no failed stage on record: nothing to tell, and no guess
    return {
        "stage": failure.stage.value,
        "attempt": failure.attempt,
        "error_code": failure.error_code,
        "error_summary": failure.error_summary,
    }


def documents(uow: UnitOfWork, groups: list[ImageGroup]) -> list[dict[str, Any]]:
    """Status objects, with one look-up for the failures of all the FAILED groups."""
    failed = [g.job_id for g in groups if g.status is ImageGroupStatus.FAILED]
    failures = uow.stages.latest_failures(failed) if failed else {}
    return [group_document(g, failures.get(g.job_id)) for g in groups]


def existing_group(uow: UnitOfWork, group_id: ImageGroupId) -> ImageGroup:
    """The group a read command names, or ImageGroupNotFoundError."""
    group = uow.groups.find_by_id(group_id)
    if group is None:
        raise ImageGroupNotFoundError(image_group_id=group_id.value)
    return group


def status(args: argparse.Namespace) -> int:
    group_id = ImageGroupId(args.image_group_id)
    with runtime().new_uow() as uow:
        group = existing_group(uow, group_id)
        [document] = documents(uow, [group])
    if args.json:
        print_json(document)
        return 0
    images = document.pop("images")
    if "failure" in document:
        document |= _failure_fields(document.pop("failure"))
    if group.deadline_at is not None:
        document["deadline"] = _deadline(group, runtime().now())
    print_fields(document)
    print()
    print_table(["ROLE", "IMAGE"], [[i["role"], i["image_name"]] for i in images])
    return 0


def _failure_fields(failure: dict[str, Any] | None) -> dict[str, Any]:
    if failure is None:
        return {"failed_stage": "unknown (no failed stage on record)"}
    return {
        "failed_stage": f"{failure['stage']} (attempt {failure['attempt']})",
        "error_code": failure["error_code"],
        "error_summary": failure["error_summary"],
    }


def list_groups(args: argparse.Namespace) -> int:
    wanted = None if args.status is None else ImageGroupStatus(args.status)
    rt = runtime()
    now = rt.now()
    with rt.new_uow() as uow:
        page = uow.groups.list_by_status(
            wanted, limit=args.limit, offset=args.offset, overdue_at=now if args.overdue else None
        )
        items = documents(uow, page.items)
    if args.json:
        print_json(
            {"items": items, "total": page.total, "limit": page.limit, "offset": page.offset}
        )
        return 0
    rows = [
        [g["image_group_id"], g["status"], g["attempt"], g["job_id"], g["updated_at"], due, why]
        for group, g in zip(page.items, items, strict=True)
        for due, why in [(_deadline(group, now), _why(g))]
    ]
    header = ["IMAGE GROUP", "STATUS", "ATTEMPT", "JOB", "UPDATED", "DEADLINE", "FAILURE"]
    print_table(header, rows)
    shown = f"{page.offset + 1}-{page.offset + len(items)}" if items else "none"
    print(f"\nshowing {shown} of {page.total}")
    return 0


def _deadline(group: ImageGroup, now: datetime) -> str | None:
    """When the awaited result is due, and whether that has passed (not in the JSON: the
    contract's status object has no such key, and strict readers compare whole objects)."""
    if group.deadline_at is None:
        return None
    late = " (overdue)" if group.deadline_at <= now else ""
    return f"{iso(group.deadline_at)}{late}"


def _why(document: dict[str, Any]) -> str | None:
    failure = document.get("failure")
    if failure is None:
        return None
    return f"{failure['stage']}: {failure['error_code'] or 'no error code'}"


def history(args: argparse.Namespace) -> int:
    group_id = ImageGroupId(args.image_group_id)
    with runtime().new_uow() as uow:
        existing_group(uow, group_id)
        transitions = uow.history.list_for_group(group_id)
    # Each move carries its cause (workers/cli/history_view.py), kept for every attempt.
    entries = [history_view.entry(t) for t in transitions]
    if args.json:
        print_json(entries)
        return 0
    history_view.print_history(entries)
    return 0
