"""The SQL unit of work: one connection, one transaction, committed only when asked."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine

from domain.ports import (
    CatalogRepository,
    ImageGroupRepository,
    InboxRepository,
    JobRepository,
    StageRepository,
)
from persistence.batching import BatchingConnection
from persistence.ports import (
    DeadLetterRepository,
    DeliveryRepository,
    HistoryRepository,
    OutboxRepository,
    TraceRepository,
)
from persistence.recording import EventRecorder, FollowOn, SeenGroups
from persistence.sql_groups import (
    SqlCatalogRepository,
    SqlHistoryRepository,
    SqlImageGroupRepository,
)
from persistence.sql_records import (
    SqlDeadLetterRepository,
    SqlDeliveryRepository,
    SqlInboxRepository,
    SqlJobRepository,
    SqlOutboxRepository,
    SqlStageRepository,
)
from persistence.sql_trace import SqlTraceRepository


class SqlUnitOfWork:
    """Repositories run Core statements on one Connection: the ORM session's unit-of-work
    machinery is not needed (rows are mapped to entities explicitly) and costs time per event.
    The events of the groups it hands out become rows at commit (persistence/recording.py),
    their follow-ons built by `follow_on`.
    """

    def __init__(self, engine: Engine, follow_on: FollowOn | None = None) -> None:
        self.engine = engine
        self._recorder = EventRecorder(follow_on)
        self.follow_ons = self._recorder.stored

    def __enter__(self) -> SqlUnitOfWork:
        self.connection = conn = BatchingConnection(self.engine.connect())
        self.groups: ImageGroupRepository = SeenGroups(
            SqlImageGroupRepository(conn), self._recorder
        )
        self.catalogs: CatalogRepository = SqlCatalogRepository(conn)
        self.jobs: JobRepository = SqlJobRepository(conn)
        self.stages: StageRepository = SqlStageRepository(conn)
        self.history: HistoryRepository = SqlHistoryRepository(conn)
        self.inbox: InboxRepository = SqlInboxRepository(conn)
        self.outbox: OutboxRepository = SqlOutboxRepository(conn)
        self.deliveries: DeliveryRepository = SqlDeliveryRepository(conn)
        self.dead_letters: DeadLetterRepository = SqlDeadLetterRepository(conn)
        self.trace: TraceRepository = SqlTraceRepository(conn)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is rolled back; close() returns the connection even
        # when the rollback fails on a dead connection.
        try:
            self.connection.rollback()
        finally:
            self.connection.close()

    def commit(self) -> None:
        self._recorder.store(self.history, self.outbox, self.stages)
        self.connection.commit()

    def rollback(self) -> None:
        self._recorder.forget()
        self.connection.rollback()
