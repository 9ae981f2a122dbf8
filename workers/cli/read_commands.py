"""Read commands: `status`, `list` and `history` of image groups."""

from __future__ import annotations

import argparse
from typing import Any

from domain import ImageGroup, ImageGroupId, ImageGroupNotFoundError, ImageGroupStatus
from workers.bootstrap import runtime
from workers.cli.output import iso, print_fields, print_json, print_table


def group_document(group: ImageGroup) -> dict[str, Any]:
    """The status object of CONTRACT.md §4."""
    images = sorted(group.images, key=lambda image: image.role.value)
    return {
        "image_group_id": group.id.value,
        "job_id": group.job_id,
        "status": group.status.value,
        "attempt": group.attempt,
        "images": [{"role": i.role.value, "image_name": i.image_name} for i in images],
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }


def status(args: argparse.Namespace) -> int:
    group_id = ImageGroupId(args.image_group_id)
    with runtime().new_uow() as uow:
        group = uow.groups.find_by_id(group_id)
    if group is None:
        raise ImageGroupNotFoundError(image_group_id=group_id.value)
    document = group_document(group)
    if args.json:
        print_json(document)
        return 0
    images = document.pop("images")
    print_fields(document)
    print()
    print_table(["ROLE", "IMAGE"], [[i["role"], i["image_name"]] for i in images])
    return 0


def list_groups(args: argparse.Namespace) -> int:
    wanted = None if args.status is None else ImageGroupStatus(args.status)
    with runtime().new_uow() as uow:
        page = uow.groups.list_by_status(wanted, limit=args.limit, offset=args.offset)
    items = [group_document(group) for group in page.items]
    if args.json:
        print_json(
            {"items": items, "total": page.total, "limit": page.limit, "offset": page.offset}
        )
        return 0
    rows = [
        [g["image_group_id"], g["status"], g["attempt"], g["job_id"], g["updated_at"]]
        for g in items
    ]
    print_table(["IMAGE GROUP", "STATUS", "ATTEMPT", "JOB", "UPDATED"], rows)
    shown = f"{page.offset + 1}-{page.offset + len(items)}" if items else "none"
    print(f"\nshowing {shown} of {page.total}")
    return 0


def history(args: argparse.Namespace) -> int:
    group_id = ImageGroupId(args.image_group_id)
    with runtime().new_uow() as uow:
        if not uow.groups.exists(group_id):
            raise ImageGroupNotFoundError(image_group_id=group_id.value)
        transitions = uow.history.list_for_group(group_id)
    entries = [
        {
            "from_status": None if t.from_status is None else t.from_status.value,
            "to_status": t.to_status.value,
            "event_id": t.event_id,
            "at": iso(t.at),
        }
        for t in transitions
    ]
    if args.json:
        print_json(entries)
        return 0
    rows = [[e["at"], e["from_status"], e["to_status"], e["event_id"]] for e in entries]
    print_table(["AT", "FROM", "TO", "EVENT"], rows)
    return 0
