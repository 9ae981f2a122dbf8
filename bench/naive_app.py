"""The naive peer: what a competent team writes for this mission without our machinery.

    celery -A bench.naive_app worker --concurrency 2      # DATABASE_URL: an empty database

A Celery app with the contract's two task names on `imagegroups.events`, acks_late, JSON and
Flower's task events (results as the worker stores them: only when `CELERY_RESULT_BACKEND` is
set). No inbox and no outbox: SQLAlchemy 2 ORM with a Session per task. A catalog.parsed stores
the catalog (reservation) row; a build result locks the catalog row, inserts the group
(DEPLOYING), its images and a history row, commits, and only then sends `pipeline.deploy`: a
dual write (a crash between the two loses the request). It creates its own tables at worker
start. It handles what the bench measures, build results; other stages are left alone.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery, signals
from sqlalchemy import JSON, DateTime, Engine, ForeignKey, String, create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

QUEUE = "imagegroups.events"
broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
backend = os.environ.get("CELERY_RESULT_BACKEND") or None
app = Celery("bench-naive", broker=broker)
app.conf.update(
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    result_backend=backend,
    task_ignore_result=backend is None,
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
)


class Base(DeclarativeBase):
    pass


class Catalog(Base):
    __tablename__ = "catalogs"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    image_group_id: Mapped[str] = mapped_column(String(128), unique=True)
    images: Mapped[dict[str, str]] = mapped_column(JSON)
    parsed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ImageGroup(Base):
    __tablename__ = "image_groups"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    images: Mapped[list[Image]] = relationship()
    history: Mapped[list[History]] = relationship()


class Image(Base):
    __tablename__ = "images"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    image_group_id: Mapped[str] = mapped_column(ForeignKey("image_groups.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(128))
    image_name: Mapped[str] = mapped_column(String(256))


class History(Base):
    __tablename__ = "group_history"
    id: Mapped[int] = mapped_column(primary_key=True)
    image_group_id: Mapped[str] = mapped_column(ForeignKey("image_groups.id"))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _Engine:
    """One engine per process, made after the fork."""

    engine: Engine | None = None
    pid = 0

    @classmethod
    def get(cls) -> Engine:
        if cls.engine is None or cls.pid != os.getpid():
            cls.engine, cls.pid = create_engine(os.environ["DATABASE_URL"]), os.getpid()
        return cls.engine


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def create_tables(**_: Any) -> None:
    """In the worker's main process, before the pool forks: nothing is left connected."""
    engine = create_engine(os.environ["DATABASE_URL"])
    Base.metadata.create_all(engine)
    engine.dispose()


def _check(event: Any, event_type: str) -> dict[str, Any]:
    if not isinstance(event, dict) or event.get("event_type") != event_type:
        raise ValueError(f"not a {event_type} event: {event!r:.200}")
    if event.get("schema_version") != 1:
        raise ValueError(f"unsupported schema_version {event.get('schema_version')!r}")
    return event


@app.task(name="imagegroups.catalog_parsed")  # type: ignore[untyped-decorator]
def catalog_parsed(event: dict[str, Any]) -> str:
    payload = _check(event, "catalog.parsed")["payload"]
    named = payload.get("role_images") or {}
    images = {role: named.get(role, f"{role}.img") for role in payload["roles"]}
    with Session(_Engine.get()) as session:
        session.add(
            Catalog(
                job_id=event["job_id"],
                image_group_id=payload["image_group_id"],
                images=images,
                parsed_at=datetime.now(UTC),
            )
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.get(Catalog, event["job_id"]) is None:
                raise
            return "duplicate"  # parsed before: a redelivery
    return "applied"


@app.task(name="imagegroups.stage_finished")  # type: ignore[untyped-decorator]
def stage_finished(event: dict[str, Any]) -> str:
    payload = _check(event, "stage.finished")["payload"]
    if not payload["stage"].startswith("build-image") or payload["outcome"] != "succeeded":
        return "ignored"
    now = datetime.now(UTC)
    with Session(_Engine.get()) as session:
        query = select(Catalog).where(Catalog.job_id == event["job_id"]).with_for_update()
        catalog = session.execute(query).scalar_one()
        group = ImageGroup(
            id=catalog.image_group_id,
            job_id=catalog.job_id,
            status="DEPLOYING",
            attempt=1,
            created_at=now,
            updated_at=now,
            images=[Image(role=r, image_name=name) for r, name in catalog.images.items()],
            history=[History(to_status="DEPLOYING", event_id=event["event_id"], at=now)],
        )
        session.add(group)
        request = _deploy_request(event, group)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.get(ImageGroup, request["payload"]["image_group_id"]) is None:
                raise
            return "duplicate"  # the group exists: a redelivery
    app.send_task(
        "pipeline.deploy",
        kwargs={"event": request},
        queue="pipeline.deploy",
        task_id=request["event_id"],
    )
    return "applied"


def _deploy_request(cause: dict[str, Any], group: ImageGroup) -> dict[str, Any]:
    images = [{"role": i.role, "image_name": i.image_name} for i in group.images]
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "deploy.requested",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "job_id": group.job_id,
        "correlation_id": cause.get("correlation_id"),
        "causation_id": cause["event_id"],
        "payload": {"image_group_id": group.id, "attempt": group.attempt, "images": images},
    }
