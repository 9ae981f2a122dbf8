"""The repositories' deadline promises, alike on the in-memory, PostgreSQL and SQLite backends."""

from __future__ import annotations

import threading
from datetime import timedelta

from domain import ImageGroup, ImageGroupStatus, StageName, StageOutcome
from tests.contract.test_repositories import (
    HOLD_SECONDS,
    NewUow,
    at,
    gid,
    group,
    in_thread,
    saved,
)

S = ImageGroupStatus
DEPLOY = StageName.DEPLOY


def waiting(n: int, due_in_minutes: float | None, *, created: float = 0) -> ImageGroup:
    """Group n, deploying since minute `created`; due that many minutes later (None: never)."""
    g = group(n, created=at(created))
    timeout = None if due_in_minutes is None else timedelta(minutes=due_in_minutes)
    g.start(DEPLOY, event_id=f"ev-start-{n}", at=at(created), timeout=timeout)
    return g


def claim(new_uow: NewUow, minute: float, limit: int = 10) -> list[str]:
    with new_uow() as uow:
        return [g.id.value for g in uow.groups.claim_overdue(at(minute), limit=limit)]


def test_a_deadline_is_stored_with_the_group_and_cleared_by_update_status(
    new_uow: NewUow,
) -> None:
    saved(new_uow, waiting(1, 30))
    with new_uow() as uow:
        found = uow.groups.find_by_id(gid(1))
        assert found is not None and found.deadline_at == at(30)
        found.finish(DEPLOY, StageOutcome.SUCCEEDED, attempt=1, event_id="ev-ok", at=at(5))
        uow.groups.update_status(found)
        uow.commit()
    with new_uow() as uow:
        again = uow.groups.find_by_id_for_update(gid(1))
        assert again is not None and (again.status, again.deadline_at) == (S.DEPLOYED, None)


def test_claim_overdue_takes_passed_deadlines_earliest_first_and_never_a_group_without_one(
    new_uow: NewUow,
) -> None:
    saved(new_uow, waiting(1, 30), waiting(2, 10), waiting(3, 60), waiting(4, None), group(5))

    assert claim(new_uow, minute=9) == []
    assert claim(new_uow, minute=10) == ["group-2"]  # due exactly now: due
    assert claim(new_uow, minute=45) == ["group-2", "group-1"]
    assert claim(new_uow, minute=10_000, limit=2) == ["group-2", "group-1"]


def test_list_by_status_with_overdue_at_counts_and_lists_only_overdue_groups_newest_first(
    new_uow: NewUow,
) -> None:
    saved(
        new_uow,
        waiting(1, 5, created=0),
        waiting(2, 5, created=1),
        waiting(3, 60, created=2),
        waiting(4, None, created=3),
    )
    with new_uow() as uow:
        page = uow.groups.list_by_status(None, limit=1, offset=0, overdue_at=at(30))
        deploying = uow.groups.list_by_status(S.DEPLOYING, limit=10, offset=0, overdue_at=at(30))
        built = uow.groups.list_by_status(S.BUILT, limit=10, offset=0, overdue_at=at(30))
        everything = uow.groups.list_by_status(None, limit=10, offset=0)

    assert ([g.id.value for g in page.items], page.total) == (["group-2"], 2)
    assert [g.id.value for g in deploying.items] == ["group-2", "group-1"]
    assert built.total == 0
    assert everything.total == 4


def test_two_sweepers_at_once_never_claim_the_same_group(new_locking_uow: NewUow) -> None:
    saved(new_locking_uow, waiting(1, 1), waiting(2, 2), waiting(3, 3))
    claimed, released = threading.Event(), threading.Event()
    first: list[str] = []

    def sweeper() -> None:
        with new_locking_uow() as uow:
            for g in uow.groups.claim_overdue(at(10), limit=2):
                first.append(g.id.value)
                g.expire(DEPLOY, g.attempt, event_id=f"cmd-{g.id.value}", at=at(10))
                uow.groups.update_status(g)
            claimed.set()
            released.wait(10)
            uow.commit()

    join = in_thread(sweeper)
    assert claimed.wait(10)
    threading.Timer(HOLD_SECONDS, released.set).start()
    second = claim(new_locking_uow, minute=10)
    join()

    assert first == ["group-1", "group-2"]
    assert second == ["group-3"]
