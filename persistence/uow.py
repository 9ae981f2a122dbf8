"""The SQL unit of work: one session, one transaction, committed only when asked."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from domain.ports import (
    CatalogRepository,
    DeadLetterRepository,
    DeliveryRepository,
    HistoryRepository,
    ImageGroupRepository,
    ImageRepository,
    InboxRepository,
    JobRepository,
    OutboxRepository,
    StageRepository,
)
from persistence.sql_groups import (
    SqlCatalogRepository,
    SqlHistoryRepository,
    SqlImageGroupRepository,
    SqlImageRepository,
)
from persistence.sql_records import (
    SqlDeadLetterRepository,
    SqlDeliveryRepository,
    SqlInboxRepository,
    SqlJobRepository,
    SqlOutboxRepository,
    SqlStageRepository,
)


class SqlUnitOfWork:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __enter__(self) -> SqlUnitOfWork:
        self.session = session = self.session_factory()
        self.groups: ImageGroupRepository = SqlImageGroupRepository(session)
        self.images: ImageRepository = SqlImageRepository(session)
        self.catalogs: CatalogRepository = SqlCatalogRepository(session)
        self.jobs: JobRepository = SqlJobRepository(session)
        self.stages: StageRepository = SqlStageRepository(session)
        self.history: HistoryRepository = SqlHistoryRepository(session)
        self.inbox: InboxRepository = SqlInboxRepository(session)
        self.outbox: OutboxRepository = SqlOutboxRepository(session)
        self.deliveries: DeliveryRepository = SqlDeliveryRepository(session)
        self.dead_letters: DeadLetterRepository = SqlDeadLetterRepository(session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is rolled back; close() returns the connection.
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
