"""SQL repositories for the aggregate: groups, images, catalog reservations and history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, func, select

from domain import (
    CatalogReservation,
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    Page,
    RoleName,
    Transition,
)
from persistence import mapping, statements
from persistence.models import (
    CatalogReservationRow,
    ImageGroupRow,
    ImageRow,
    TransitionRow,
)
from persistence.statements import BatchingConnection


class SqlImageGroupRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def save(self, group: ImageGroup) -> None:
        inserted = self.conn.execute(
            statements.insert_group(self.conn.dialect.name), mapping.group_values(group)
        ).first()
        if inserted is None:
            held = self.conn.scalar(
                select(ImageGroupRow.job_id).where(ImageGroupRow.id == group.id.value)
            )
            if held is not None:
                raise DuplicateImageGroupError(group.id.value, group.job_id, held)
            mine = self.conn.scalar(
                select(ImageGroupRow.id).where(ImageGroupRow.job_id == group.job_id)
            )
            raise ImageGroupMismatchError(group.job_id, mine, group.id.value)
        if group.images:
            self.conn.defer(
                statements.INSERT_IMAGES, [mapping.image_values(group.id, i) for i in group.images]
            )

    def update_status(self, group: ImageGroup) -> None:
        values = {
            "b_id": group.id.value,
            "b_status": group.status.value,
            "b_attempt": group.attempt,
            "b_updated_at": group.updated_at,
            "b_deadline_at": group.deadline_at,
        }
        self.conn.defer(statements.UPDATE_GROUP_STATUS, values)

    def _load(self, by: str, value: str, *, lock: bool) -> ImageGroup | None:
        rows = self.conn.rows(_load_statement(by, lock), {"value": value})
        if not rows:
            return None
        images = [
            Image(id=str(r.image_id), role=RoleName(r.role), image_name=r.image_name)
            for r in rows
            if r.image_id is not None
        ]
        return mapping.group_to_entity(rows[0], images)

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load("id", group_id.value, lock=False)

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load("id", group_id.value, lock=True)

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        return self._load("job_id", job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        return self._load("job_id", job_id, lock=True)

    def list_by_status(
        self,
        status: ImageGroupStatus | None,
        *,
        limit: int,
        offset: int,
        overdue_at: datetime | None = None,
    ) -> Page[ImageGroup]:
        where = [] if status is None else [ImageGroupRow.status == status.value]
        if overdue_at is not None:
            where += [
                ImageGroupRow.deadline_at.is_not(None),
                ImageGroupRow.deadline_at <= overdue_at,
            ]
        total = self.conn.scalar(select(func.count()).select_from(ImageGroupRow).where(*where))
        rows = self.conn.execute(
            select(ImageGroupRow)
            .where(*where)
            .order_by(ImageGroupRow.created_at.desc(), ImageGroupRow.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return Page(items=self._with_images(rows), total=total or 0, limit=limit, offset=offset)

    def claim_overdue(self, now: datetime, *, limit: int) -> list[ImageGroup]:
        rows = self.conn.execute(OVERDUE, {"now": now, "limit": limit}).all()
        return self._with_images(rows)

    def _with_images(self, rows: Sequence[Any]) -> list[ImageGroup]:
        """Entities for group rows, with all their images in one more query."""
        ids = [r.id for r in rows]
        images: dict[str, list[Image]] = {i: [] for i in ids}
        if ids:
            for image in self.conn.execute(
                select(ImageRow).where(ImageRow.image_group_id.in_(ids)).order_by(ImageRow.role)
            ):
                images[image.image_group_id].append(mapping.image_to_entity(image))
        return [mapping.group_to_entity(r, images[r.id]) for r in rows]

    def exists(self, group_id: ImageGroupId) -> bool:
        found = self.conn.scalar(select(ImageGroupRow.id).where(ImageGroupRow.id == group_id.value))
        return found is not None


class SqlCatalogRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def reserve(self, reservation: CatalogReservation) -> CatalogReservation | None:
        inserted = self.conn.execute(
            statements.reserve_catalog(self.conn.dialect.name),
            mapping.reservation_values(reservation),
        ).first()
        if inserted is not None:
            return None
        # Under READ COMMITTED this statement sees the winner once its insert has committed.
        holder = self.conn.execute(
            select(CatalogReservationRow).where(
                CatalogReservationRow.image_group_id == reservation.image_group_id.value
            )
        ).first()
        if holder is not None and holder.job_id != reservation.job_id:
            raise DuplicateImageGroupError(
                reservation.image_group_id.value, reservation.job_id, holder.job_id
            )
        if holder is None:
            mine = self.find_by_job_id(reservation.job_id)
            raise ImageGroupMismatchError(
                reservation.job_id,
                None if mine is None else mine.image_group_id.value,
                reservation.image_group_id.value,
            )
        return mapping.reservation_to_entity(holder)

    def _find(self, job_id: str, *, lock: bool) -> CatalogReservation | None:
        rows = self.conn.rows(_reservation_statement(lock), {"job_id": job_id})
        return mapping.reservation_to_entity(rows[0]) if rows else None

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=True)


class SqlHistoryRepository:
    def __init__(self, conn: BatchingConnection) -> None:
        self.conn = conn

    def add(self, transitions: Sequence[Transition]) -> None:
        if transitions:
            self.conn.defer(
                statements.INSERT_HISTORY, [mapping.transition_values(t) for t in transitions]
            )

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]:
        rows = self.conn.execute(
            select(TransitionRow)
            .where(TransitionRow.image_group_id == group_id.value)
            .order_by(TransitionRow.id)
        )
        return [mapping.transition_to_entity(r) for r in rows]


#: The deadline sweep's one query: the partial index ix_image_groups_deadline holds only the
#: waiting groups, so it costs the same however many groups exist. SKIP LOCKED: a group
#: another sweeper (or a stage result) holds is left to it; the caller re-checks under lock.
OVERDUE = (
    select(ImageGroupRow)
    .where(ImageGroupRow.deadline_at.is_not(None), ImageGroupRow.deadline_at <= bindparam("now"))
    .order_by(ImageGroupRow.deadline_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


@cache
def _load_statement(by: str, lock: bool) -> Executable:
    """The group with its images in one round trip; built once per shape, then reused."""
    stmt = (
        select(
            ImageGroupRow,
            ImageRow.id.label("image_id"),
            ImageRow.role,
            ImageRow.image_name,
        )
        .outerjoin(ImageRow, ImageRow.image_group_id == ImageGroupRow.id)
        .where(getattr(ImageGroupRow, by) == bindparam("value"))
    )
    # FOR UPDATE OF image_groups: the outer join's nullable side cannot be locked.
    return stmt.with_for_update(of=ImageGroupRow) if lock else stmt


@cache
def _reservation_statement(lock: bool) -> Executable:
    stmt = select(CatalogReservationRow).where(CatalogReservationRow.job_id == bindparam("job_id"))
    return stmt.with_for_update() if lock else stmt
