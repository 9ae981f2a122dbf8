"""SQL repositories for the aggregate: groups, images, catalog reservations and history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from domain import (
    CatalogReservation,
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    Page,
    Transition,
)
from persistence import mappers
from persistence.models import (
    CatalogReservationRow,
    ImageGroupRow,
    ImageRow,
    TransitionRow,
)
from persistence.sql_common import insert_ignoring_conflicts


class SqlImageGroupRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def save(self, group: ImageGroup) -> None:
        stmt = insert_ignoring_conflicts(self.session, ImageGroupRow)
        inserted = self.session.execute(
            stmt.values(**mappers.group_values(group)).returning(ImageGroupRow.id)
        ).first()
        if inserted is None:
            held = self.session.scalar(
                select(ImageGroupRow.job_id).where(ImageGroupRow.id == group.id.value)
            )
            if held is not None:
                raise DuplicateImageGroupError(group.id.value, group.job_id, held)
            mine = self.session.scalar(
                select(ImageGroupRow.id).where(ImageGroupRow.job_id == group.job_id)
            )
            raise ImageGroupMismatchError(group.job_id, mine, group.id.value)
        if group.images:
            self.session.execute(
                insert(ImageRow),
                [mappers.image_values(group.id, i) for i in group.images],
            )

    def update_status(self, group: ImageGroup) -> None:
        self.session.execute(
            update(ImageGroupRow)
            .where(ImageGroupRow.id == group.id.value)
            .values(status=group.status.value, attempt=group.attempt, updated_at=group.updated_at)
        )

    def _load(self, where: Any, *, lock: bool) -> ImageGroup | None:
        stmt = (
            select(ImageGroupRow, ImageRow)
            .outerjoin(ImageRow, ImageRow.image_group_id == ImageGroupRow.id)
            .where(where)
        )
        if lock:
            # FOR UPDATE OF image_groups: the outer join's nullable side cannot be locked.
            stmt = stmt.with_for_update(of=ImageGroupRow)
        rows = self.session.execute(stmt).all()
        if not rows:
            return None
        images = [image for _, image in rows if image is not None]
        return mappers.group_to_entity(rows[0][0], images)

    def find_by_id(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load(ImageGroupRow.id == group_id.value, lock=False)

    def find_by_id_for_update(self, group_id: ImageGroupId) -> ImageGroup | None:
        return self._load(ImageGroupRow.id == group_id.value, lock=True)

    def find_by_job_id(self, job_id: str) -> ImageGroup | None:
        return self._load(ImageGroupRow.job_id == job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> ImageGroup | None:
        return self._load(ImageGroupRow.job_id == job_id, lock=True)

    def list_by_status(
        self, status: ImageGroupStatus | None, *, limit: int, offset: int
    ) -> Page[ImageGroup]:
        where = [] if status is None else [ImageGroupRow.status == status.value]
        total = self.session.scalar(select(func.count()).select_from(ImageGroupRow).where(*where))
        rows = self.session.scalars(
            select(ImageGroupRow)
            .where(*where)
            .order_by(ImageGroupRow.created_at.desc(), ImageGroupRow.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        ids = [r.id for r in rows]
        images: dict[str, list[ImageRow]] = {i: [] for i in ids}
        if ids:
            for image in self.session.scalars(
                select(ImageRow).where(ImageRow.image_group_id.in_(ids))
            ):
                images[image.image_group_id].append(image)
        items = [mappers.group_to_entity(r, images[r.id]) for r in rows]
        return Page(items=items, total=total or 0, limit=limit, offset=offset)

    def exists(self, group_id: ImageGroupId) -> bool:
        found = self.session.scalar(
            select(ImageGroupRow.id).where(ImageGroupRow.id == group_id.value)
        )
        return found is not None

    def count_by_status(self) -> dict[ImageGroupStatus, int]:
        rows = self.session.execute(
            select(ImageGroupRow.status, func.count()).group_by(ImageGroupRow.status)
        ).all()
        return {ImageGroupStatus(status): count for status, count in rows}

    def delete(self, group_id: ImageGroupId) -> None:
        self.session.execute(delete(ImageGroupRow).where(ImageGroupRow.id == group_id.value))


class SqlImageRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def save_batch(self, group_id: ImageGroupId, images: Sequence[Image]) -> None:
        if not images:
            return
        stmt = insert_ignoring_conflicts(self.session, ImageRow)
        values = [mappers.image_values(group_id, i) for i in images]
        inserted = self.session.execute(stmt.values(values).returning(ImageRow.id)).all()
        if len(inserted) != len(values):
            raise DuplicateImageGroupError(group_id.value, "", None)

    def find_by_image_group_id(self, group_id: ImageGroupId) -> list[Image]:
        rows = self.session.scalars(
            select(ImageRow)
            .where(ImageRow.image_group_id == group_id.value)
            .order_by(ImageRow.role)
        )
        return [mappers.image_to_entity(r) for r in rows]


class SqlCatalogRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def reserve(self, reservation: CatalogReservation) -> bool:
        stmt = insert_ignoring_conflicts(self.session, CatalogReservationRow)
        values = mappers.reservation_values(reservation)
        inserted = self.session.execute(
            stmt.values(**values).returning(CatalogReservationRow.job_id)
        ).first()
        if inserted is not None:
            return True
        # Under READ COMMITTED this statement sees the winner once its insert has committed.
        holder = self.session.scalar(
            select(CatalogReservationRow).where(
                CatalogReservationRow.image_group_id == reservation.image_group_id.value
            )
        )
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
        return False

    def _find(self, job_id: str, *, lock: bool) -> CatalogReservation | None:
        stmt = select(CatalogReservationRow).where(CatalogReservationRow.job_id == job_id)
        row = self.session.scalar(stmt.with_for_update() if lock else stmt)
        return None if row is None else mappers.reservation_to_entity(row)

    def find_by_job_id(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=False)

    def find_by_job_id_for_update(self, job_id: str) -> CatalogReservation | None:
        return self._find(job_id, lock=True)


class SqlHistoryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, transitions: Sequence[Transition]) -> None:
        if transitions:
            self.session.execute(
                insert(TransitionRow),
                [mappers.transition_values(t) for t in transitions],
            )

    def list_for_group(self, group_id: ImageGroupId) -> list[Transition]:
        rows = self.session.scalars(
            select(TransitionRow)
            .where(TransitionRow.image_group_id == group_id.value)
            .order_by(TransitionRow.id)
        )
        return [mappers.transition_to_entity(r) for r in rows]
