"""The SQL unit of work: one session, one transaction, committed only when asked."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

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
        self.groups = SqlImageGroupRepository(session)
        self.images = SqlImageRepository(session)
        self.catalogs = SqlCatalogRepository(session)
        self.jobs = SqlJobRepository(session)
        self.stages = SqlStageRepository(session)
        self.history = SqlHistoryRepository(session)
        self.inbox = SqlInboxRepository(session)
        self.outbox = SqlOutboxRepository(session)
        self.deliveries = SqlDeliveryRepository(session)
        self.dead_letters = SqlDeadLetterRepository(session)
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
