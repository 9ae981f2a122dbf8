"""One repository contract, kept alike by the in-memory fakes and the SQL adapters."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain import (
    CatalogReservation,
    DeadLetter,
    DeadLetterStatus,
    DuplicateImageGroupError,
    Image,
    ImageGroup,
    ImageGroupId,
    ImageGroupMismatchError,
    ImageGroupStatus,
    InboxRecord,
    JobRecord,
    OutboxMessage,
    PipelinePhase,
    RoleName,
    RowTaken,
    StageName,
    StageOutcome,
    StageRecord,
    StageState,
    Transition,
)
from persistence.uow import StoreUnitOfWork

NewUow = Callable[[], StoreUnitOfWork]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = ImageGroupStatus
GroupView = tuple[str, str, S, int, datetime, datetime, tuple[tuple[str, str, str], ...]]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def gid(n: int) -> ImageGroupId:
    return ImageGroupId(f"group-{n}")


def image(role: str) -> Image:
    return Image(str(uuid.uuid4()), RoleName(role), f"{role}-v1.img")


def group(n: int, *, job: str | None = None, created: datetime = T0) -> ImageGroup:
    # Roles deliberately out of order: every backend hands images back ordered by role.
    images = [image("login"), image("compute")]
    job_id = job if job is not None else f"job-{n}"
    return ImageGroup.create(gid(n), job_id, images, event_id=f"ev-create-{n}", at=created)


def view(g: ImageGroup) -> GroupView:
    images = tuple((i.id, i.role.value, i.image_name) for i in g.images)
    return (g.id.value, g.job_id, g.status, g.attempt, g.created_at, g.updated_at, images)


def stored_view(g: ImageGroup) -> GroupView:
    """The view of `g` as every backend hands it back: images ordered by role."""
    found = view(g)
    return (*found[:6], tuple(sorted(found[6], key=lambda i: i[1])))


def saved(new_uow: NewUow, *groups: ImageGroup) -> None:
    with new_uow() as uow:
        for g in groups:
            uow.groups.save(g)
        uow.commit()


def reservation(group_n: int, job: str) -> CatalogReservation:
    return CatalogReservation(
        image_group_id=gid(group_n),
        job_id=job,
        roles=(RoleName("login"), RoleName("compute")),
        role_images={"login": "login-custom.img"},
        catalog_name="cluster-a",
        catalog_version="2026.03",
        created_at=T0,
    )


def message(n: int, created: datetime) -> OutboxMessage:
    body = {"image_group_id": "group-1", "n": n, "nested": {"ok": True}}
    return OutboxMessage(
        str(uuid.uuid4()), "imagegroups.deploy", "deploy", body, "group-1", created
    )


def letter(event_id: str, *, replay_of: int | None = None) -> DeadLetter:
    return DeadLetter(
        id=None,
        task_name="imagegroups.deploy_result",
        event_id=event_id,
        body=f'{{"event_id": "{event_id}"}}',
        content_type="application/json",
        error_type="ValueError",
        error_message="boom",
        traceback="Traceback (most recent call last): ...",
        attempts=3,
        status=DeadLetterStatus.DEAD,
        first_failed_at=at(0),
        last_failed_at=at(5),
        replay_of=replay_of,
    )


# Groups --------------------------------------------------------------------------------------


def test_a_saved_group_comes_back_whole_by_id_and_by_job(new_uow: NewUow) -> None:
    original = group(1)
    saved(new_uow, original)
    with new_uow() as uow:
        found = [
            uow.groups.find_by_id(gid(1)),
            uow.groups.find_by_id_for_update(gid(1)),
            uow.groups.find_by_job_id("job-1"),
            uow.groups.find_by_job_id_for_update("job-1"),
        ]
    expected = view(original)
    assert [i[1] for i in expected[6]] == ["login", "compute"]
    for loaded in found:
        assert loaded is not None
        assert view(loaded) == stored_view(original)
        assert loaded.events == []


def test_looking_up_what_was_never_saved_finds_nothing(new_uow: NewUow) -> None:
    saved(new_uow, group(1))
    with new_uow() as uow:
        assert uow.groups.find_by_id(gid(2)) is None
        assert uow.groups.find_by_id_for_update(gid(2)) is None
        assert uow.groups.find_by_job_id("job-2") is None
        assert uow.groups.find_by_job_id_for_update("job-2") is None
        assert uow.history.list_for_group(gid(2)) == []
        assert uow.catalogs.find_by_job_id("job-2") is None
        assert uow.catalogs.find_by_job_id_for_update("job-2") is None
        assert uow.stages.find("job-2") == []
        assert uow.dead_letters.get(12345) is None


def test_exists_is_true_only_for_a_saved_group(new_uow: NewUow) -> None:
    saved(new_uow, group(1))
    with new_uow() as uow:
        assert uow.groups.exists(gid(1)) is True
        assert uow.groups.exists(gid(2)) is False


def test_list_by_status_pages_newest_first_with_the_full_total(new_uow: NewUow) -> None:
    saved(new_uow, *(group(n, created=at(n)) for n in range(5)))
    with new_uow() as uow:
        pages = [uow.groups.list_by_status(None, limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [p.total for p in pages] == [5, 5, 5]
    assert [(p.limit, p.offset) for p in pages] == [(2, 0), (2, 2), (2, 4)]
    listed = [g.id.value for p in pages for g in p.items]
    assert listed == ["group-4", "group-3", "group-2", "group-1", "group-0"]
    assert all(len(g.images) == 2 for p in pages for g in p.items)


def test_list_by_status_counts_and_returns_only_the_matching_groups(new_uow: NewUow) -> None:
    saved(new_uow, *(group(n, created=at(n)) for n in range(5)))
    with new_uow() as uow:
        for n in (1, 3):
            g = uow.groups.find_by_job_id_for_update(f"job-{n}")
            assert g is not None
            g.start(StageName.DEPLOY, event_id=f"ev-deploy-{n}", at=at(10))
            uow.groups.update_status(g)
        uow.commit()
    with new_uow() as uow:
        deploying = uow.groups.list_by_status(S.DEPLOYING, limit=10, offset=0)
        built = uow.groups.list_by_status(S.BUILT, limit=2, offset=0)
        passed = uow.groups.list_by_status(S.PASSED, limit=10, offset=0)
    assert [g.id.value for g in deploying.items] == ["group-3", "group-1"]
    assert deploying.total == 2
    assert [g.id.value for g in built.items] == ["group-4", "group-2"]
    assert built.total == 3
    assert (passed.items, passed.total) == ([], 0)


def test_a_second_group_with_a_taken_id_is_refused_as_a_duplicate(new_uow: NewUow) -> None:
    saved(new_uow, group(1, job="job-a"))
    with new_uow() as uow, pytest.raises(DuplicateImageGroupError) as refused:
        uow.groups.save(group(1, job="job-b"))
    assert (refused.value.image_group_id, refused.value.job_id) == ("group-1", "job-b")
    assert refused.value.held_by_job_id == "job-a"
    with new_uow() as uow:
        kept = uow.groups.find_by_id(gid(1))
        assert uow.groups.find_by_job_id("job-b") is None
    assert kept is not None and kept.job_id == "job-a"


def test_a_second_group_for_the_same_job_is_refused_as_a_mismatch(new_uow: NewUow) -> None:
    saved(new_uow, group(1, job="job-a"))
    with new_uow() as uow, pytest.raises(ImageGroupMismatchError) as refused:
        uow.groups.save(group(2, job="job-a"))
    assert (refused.value.job_id, refused.value.expected) == ("job-a", "group-1")
    assert refused.value.given == "group-2"
    with new_uow() as uow:
        assert uow.groups.exists(gid(2)) is False


def test_a_created_group_is_stored_with_its_images_as_a_saved_one(new_uow: NewUow) -> None:
    made = group(1)
    with new_uow() as uow:
        uow.groups.create(made)
        uow.commit()
    with new_uow() as uow:
        loaded = uow.groups.find_by_job_id("job-1")
    assert loaded is not None and view(loaded) == stored_view(made)


@pytest.mark.parametrize("taken", ["id", "job"])
def test_creating_a_group_where_one_is_stored_writes_nothing_and_save_says_why(
    new_uow: NewUow, taken: str
) -> None:
    first = group(1, job="job-a")
    saved(new_uow, first)
    clash = group(1, job="job-b") if taken == "id" else group(2, job="job-a")
    wanted = DuplicateImageGroupError if taken == "id" else ImageGroupMismatchError
    failed: Exception | None = None
    with new_uow() as uow:
        try:
            # Where writes wait (PostgreSQL), the INSERT fails when they are next sent: here
            # with reserve's read, which sends what waits before it. Elsewhere create refuses.
            uow.groups.create(clash)
            uow.catalogs.reserve(reservation(3, "job-c"))  # in the same transaction: not written
            uow.commit()
        except (RowTaken, wanted) as error:
            failed = error
    assert failed is not None
    with new_uow() as uow:
        assert uow.catalogs.find_by_job_id("job-c") is None
        stored = uow.groups.list_by_status(None, limit=9, offset=0).items
        assert [view(g) for g in stored] == [stored_view(first)]
        with pytest.raises(wanted):
            uow.groups.save(clash)


def test_update_status_persists_status_attempt_and_updated_at(new_uow: NewUow) -> None:
    saved(new_uow, group(1))
    with new_uow() as uow:
        g = uow.groups.find_by_job_id_for_update("job-1")
        assert g is not None
        g.start(StageName.DEPLOY, event_id="ev-2", at=at(1))
        g.finish(StageName.DEPLOY, StageOutcome.FAILED, attempt=1, event_id="ev-3", at=at(2))
        g.start(StageName.DEPLOY, event_id="ev-4", at=at(3))
        uow.groups.update_status(g)
        uow.commit()
    with new_uow() as uow:
        loaded = uow.groups.find_by_id(gid(1))
    assert loaded is not None
    assert (loaded.status, loaded.attempt) == (S.DEPLOYING, 2)
    assert (loaded.created_at, loaded.updated_at) == (T0, at(3))


def test_nothing_is_stored_when_the_unit_of_work_ends_without_commit(new_uow: NewUow) -> None:
    with new_uow() as uow:
        uow.groups.save(group(1))
        uow.catalogs.reserve(reservation(1, "job-1"))
        assert uow.inbox.claim("ev-1", "imagegroups.build", "applied", T0) is True
        uow.outbox.add(message(1, T0))
        uow.deliveries.record_delivery("ev-1", T0)
        uow.dead_letters.add(letter("ev-1"))
    with new_uow() as uow:
        assert uow.groups.exists(gid(1)) is False
        assert uow.catalogs.find_by_job_id("job-1") is None
        assert uow.inbox.claim("ev-1", "imagegroups.build", "applied", T0) is True
        assert uow.outbox.pending() == (0, None)
        assert uow.deliveries.record_delivery("ev-1", T0) == 1
        assert uow.dead_letters.list() == []


def test_an_error_inside_the_unit_of_work_stores_nothing(new_uow: NewUow) -> None:
    with pytest.raises(RuntimeError, match="handler failed"), new_uow() as uow:
        uow.groups.save(group(1))
        raise RuntimeError("handler failed")
    with new_uow() as uow:
        assert uow.groups.exists(gid(1)) is False


def test_rollback_discards_the_changes_and_the_unit_of_work_goes_on(new_uow: NewUow) -> None:
    with new_uow() as uow:
        uow.groups.save(group(1))
        uow.rollback()
        uow.groups.save(group(2))
        uow.commit()
    with new_uow() as uow:
        assert uow.groups.exists(gid(1)) is False
        assert uow.groups.exists(gid(2)) is True


# Catalog reservations ------------------------------------------------------------------------


def test_a_reservation_is_new_the_first_time_and_ours_after(new_uow: NewUow) -> None:
    mine = reservation(1, "job-1")
    with new_uow() as uow:
        assert uow.catalogs.reserve(mine) is None
        uow.commit()
    with new_uow() as uow:
        held = uow.catalogs.reserve(mine)
        assert held is not None and held.same_catalog(mine)
        found = uow.catalogs.find_by_job_id("job-1")
        locked = uow.catalogs.find_by_job_id_for_update("job-1")
    for loaded in (found, locked):
        assert loaded is not None
        assert loaded.same_catalog(mine)
        assert dict(loaded.role_images) == {"login": "login-custom.img"}
        assert (loaded.catalog_name, loaded.catalog_version) == ("cluster-a", "2026.03")
        assert loaded.created_at == T0


def test_reserving_an_id_another_job_holds_is_refused_as_a_duplicate(new_uow: NewUow) -> None:
    with new_uow() as uow:
        uow.catalogs.reserve(reservation(1, "job-a"))
        uow.commit()
    with new_uow() as uow, pytest.raises(DuplicateImageGroupError) as refused:
        uow.catalogs.reserve(reservation(1, "job-b"))
    assert (refused.value.job_id, refused.value.held_by_job_id) == ("job-b", "job-a")
    with new_uow() as uow:
        assert uow.catalogs.find_by_job_id("job-b") is None


def test_reserving_a_second_id_for_one_job_is_refused_as_a_mismatch(new_uow: NewUow) -> None:
    with new_uow() as uow:
        uow.catalogs.reserve(reservation(1, "job-a"))
        uow.commit()
    with new_uow() as uow, pytest.raises(ImageGroupMismatchError) as refused:
        uow.catalogs.reserve(reservation(2, "job-a"))
    assert (refused.value.expected, refused.value.given) == ("group-1", "group-2")


# Jobs, stages and history --------------------------------------------------------------------


def test_a_stage_upsert_overwrites_the_earlier_record_of_that_stage(new_uow: NewUow) -> None:
    requested = StageRecord("job-1", StageName.DEPLOY, StageState.REQUESTED, 1, "ev-1", at(1))
    failed = StageRecord(
        "job-1",
        StageName.DEPLOY,
        StageState.FAILED,
        1,
        "ev-2",
        at(2),
        result_detail={"nodes": ["n1", "n2"], "ok": False},
        error_code="E_DEPLOY",
        error_summary="node n2 unreachable",
    )
    build = StageRecord("job-1", StageName.BUILD_IMAGE, StageState.SUCCEEDED, 1, "ev-0", at(0))
    with new_uow() as uow:
        uow.stages.upsert_many([requested, build])
        uow.commit()
    with new_uow() as uow:
        uow.stages.upsert_many([failed])
        uow.commit()
    with new_uow() as uow:
        assert uow.stages.find("job-1") == [build, failed]


def test_history_lists_a_groups_transitions_in_the_order_added(new_uow: NewUow) -> None:
    first, other = group(1), group(2)
    saved(new_uow, first, other)
    with new_uow() as uow:
        g = uow.groups.find_by_job_id_for_update("job-1")
        assert g is not None
        g.start(StageName.DEPLOY, event_id="ev-2", at=at(1))
        g.finish(StageName.DEPLOY, StageOutcome.SUCCEEDED, attempt=1, event_id="ev-3", at=at(1))
        uow.groups.update_status(g)
        uow.commit()
    with new_uow() as uow:
        history = uow.history.list_for_group(gid(1))
    assert history == [
        Transition(gid(1), None, S.BUILT, "ev-create-1", T0),
        Transition(gid(1), S.BUILT, S.DEPLOYING, "ev-2", at(1)),
        Transition(gid(1), S.DEPLOYING, S.DEPLOYED, "ev-3", at(1)),
    ]


# Inbox, deliveries and dead letters ----------------------------------------------------------


def test_the_inbox_claims_an_event_only_once(new_uow: NewUow) -> None:
    with new_uow() as uow:
        assert uow.inbox.claim("ev-1", "imagegroups.build", "applied", T0) is True
        assert uow.inbox.claim("ev-1", "imagegroups.build", "applied", T0) is False
        uow.commit()
    with new_uow() as uow:
        assert uow.inbox.claim("ev-1", "imagegroups.build", "applied", at(1)) is False
        assert uow.inbox.claim("ev-2", "imagegroups.build", "applied", at(1)) is True
        uow.inbox.set_outcome("ev-2", "stale")
        uow.commit()
    with new_uow() as uow:
        assert uow.inbox.count_by_outcome() == {"applied": 1, "stale": 1}


def inbox_record(event_id: str) -> InboxRecord:
    return InboxRecord(event_id, "imagegroups.catalog_parsed", "applied", T0, "job-1", None, 1)


def test_a_late_claim_and_reservation_are_stored_as_the_long_way_stores_them(
    new_uow: NewUow,
) -> None:
    with new_uow() as uow:
        uow.inbox.claim_late(inbox_record("ev-1"))
        uow.catalogs.reserve_late(reservation(1, "job-1"))
        uow.commit()
    with new_uow() as uow:
        assert uow.inbox.count_by_outcome() == {"applied": 1}
        assert uow.inbox.claim("ev-1", "imagegroups.catalog_parsed", "applied", at(1)) is False
        assert uow.catalogs.find_by_job_id("job-1") == reservation(1, "job-1")
        assert uow.catalogs.reserve(reservation(1, "job-1")) == reservation(1, "job-1")


@pytest.mark.parametrize("taken", ["event", "id", "job"])
def test_a_late_claim_or_reservation_meeting_a_row_writes_nothing_and_raises_row_taken(
    new_uow: NewUow, taken: str
) -> None:
    with new_uow() as uow:
        uow.inbox.claim_late(inbox_record("ev-1"))
        uow.catalogs.reserve_late(reservation(1, "job-1"))
        uow.commit()
    event = "ev-1" if taken == "event" else "ev-2"
    clash = {"event": reservation(2, "job-2"), "id": reservation(1, "job-2")}.get(
        taken, reservation(2, "job-1")
    )
    with new_uow() as uow, pytest.raises(RowTaken):
        # Raised where the row goes, or by the commit: nothing of the three is written.
        uow.inbox.claim_late(inbox_record(event))
        uow.catalogs.reserve_late(clash)
        uow.jobs.upsert(JobRecord(clash.job_id, PipelinePhase.BUILD), T0)
        uow.commit()
    with new_uow() as uow:
        assert uow.inbox.count_by_outcome() == {"applied": 1}
        assert uow.catalogs.find_by_job_id("job-2") is None
        held = uow.catalogs.find_by_job_id("job-1")
        assert held is not None and held.image_group_id == gid(1)
        if taken == "event":  # the claim the long way: one duplicate, counted only now
            assert uow.inbox.claim("ev-1", "imagegroups.catalog_parsed", "applied", T0) is False


def test_deliveries_are_counted_per_event_until_reset(new_uow: NewUow) -> None:
    counts = []
    for minute in range(3):
        with new_uow() as uow:
            counts.append(uow.deliveries.record_delivery("ev-1", at(minute)))
            uow.commit()
    with new_uow() as uow:
        other = uow.deliveries.record_delivery("ev-2", at(3))
        uow.deliveries.reset("ev-1")
        uow.commit()
    with new_uow() as uow:
        after_reset = uow.deliveries.record_delivery("ev-1", at(4))
    assert counts == [1, 2, 3]
    assert (other, after_reset) == (1, 1)


def test_the_first_counted_delivery_time_is_kept_while_counting_goes_on(
    new_uow: NewUow,
) -> None:
    with new_uow() as uow:
        assert uow.deliveries.first_counted_at("ev-1") is None
        for minute in range(3):
            uow.deliveries.record_delivery("ev-1", at(minute))
        uow.commit()
    with new_uow() as uow:
        assert uow.deliveries.first_counted_at("ev-1") == at(0)


def test_a_reset_counts_from_one_again_within_the_same_unit_of_work(new_uow: NewUow) -> None:
    with new_uow() as uow:
        assert uow.deliveries.record_delivery("ev-1", T0) == 1
        assert uow.deliveries.record_delivery("ev-1", at(1)) == 2
        uow.deliveries.reset("ev-1")
        assert uow.deliveries.record_delivery("ev-1", at(2)) == 1
        uow.commit()
    with new_uow() as uow:
        assert uow.deliveries.record_delivery("ev-1", at(3)) == 2


def test_the_first_copy_counted_holds_the_retry_chain_and_no_other_copy_is_counted(
    new_uow: NewUow,
) -> None:
    with new_uow() as uow:
        assert uow.deliveries.chain_holder("ev-1") is None
        assert uow.deliveries.record_delivery("ev-1", at(0), copy="task-a") == 1
        uow.commit()
    with new_uow() as uow:
        assert uow.deliveries.record_delivery("ev-1", at(1), copy="task-b") is None
        assert uow.deliveries.record_delivery("ev-1", at(2), copy="task-a") == 2
        assert uow.deliveries.record_delivery("ev-1", at(3), copy="task-c") is None
        assert uow.deliveries.record_delivery("ev-2", at(3), copy="task-b") == 1
        uow.commit()
    with new_uow() as uow:
        assert uow.deliveries.chain_holder("ev-1") == "task-a"
        assert uow.deliveries.chain_holder("ev-2") == "task-b"
        assert uow.deliveries.first_counted_at("ev-1") == at(0)
        # Counted without naming a copy (a count from before copies were told apart): always.
        assert uow.deliveries.record_delivery("ev-1", at(4)) == 3


def test_a_count_without_a_holder_is_claimed_by_the_next_copy_and_a_reset_frees_the_chain(
    new_uow: NewUow,
) -> None:
    with new_uow() as uow:
        assert uow.deliveries.record_delivery("ev-1", at(0)) == 1
        assert uow.deliveries.record_delivery("ev-1", at(1), copy="task-b") == 2
        assert uow.deliveries.record_delivery("ev-1", at(2), copy="task-a") is None
        uow.commit()
    with new_uow() as uow:
        uow.deliveries.reset("ev-1")  # a replay: the event starts a chain of its own
        uow.commit()
    with new_uow() as uow:
        assert uow.deliveries.chain_holder("ev-1") is None
        assert uow.deliveries.record_delivery("ev-1", at(3), copy="task-a") == 1
        assert uow.deliveries.record_delivery("ev-1", at(4), copy="task-b") is None
        assert uow.deliveries.chain_holder("ev-1") == "task-a"


def test_a_dead_letter_comes_back_whole_and_lists_by_status(new_uow: NewUow) -> None:
    with new_uow() as uow:
        first = uow.dead_letters.add(letter("ev-1"))
        second = uow.dead_letters.add(letter("ev-2", replay_of=first))
        third = uow.dead_letters.add(letter("ev-3"))
        uow.commit()
    assert len({first, second, third}) == 3
    with new_uow() as uow:
        assert uow.dead_letters.get(second) == replace(letter("ev-2", replay_of=first), id=second)
        uow.dead_letters.set_status(first, DeadLetterStatus.REPLAYED, at(9))
        uow.dead_letters.set_status(third, DeadLetterStatus.DISCARDED, at(9))
        uow.commit()
    with new_uow() as uow:
        replayed = uow.dead_letters.get(first)
        discarded = uow.dead_letters.get(third)
        dead = uow.dead_letters.list(DeadLetterStatus.DEAD)
        everything = uow.dead_letters.list()
        counts = [uow.dead_letters.count(s) for s in DeadLetterStatus]
    assert replayed is not None and replayed.status is DeadLetterStatus.REPLAYED
    assert replayed.replayed_at == at(9)
    assert discarded is not None and discarded.status is DeadLetterStatus.DISCARDED
    assert discarded.replayed_at is None
    assert [d.event_id for d in dead] == ["ev-2"]
    assert [d.id for d in everything] == sorted([first, second, third])
    assert counts == [1, 1, 1]


def test_a_dead_letter_status_change_is_seen_in_the_same_unit_of_work(new_uow: NewUow) -> None:
    with new_uow() as uow:
        letter_id = uow.dead_letters.add(letter("ev-1"))
        uow.dead_letters.set_status(letter_id, DeadLetterStatus.REPLAYED, at(9))
        found = uow.dead_letters.get(letter_id)
        assert found is not None and found.status is DeadLetterStatus.REPLAYED
        assert uow.dead_letters.count(DeadLetterStatus.DEAD) == 0


# Outbox --------------------------------------------------------------------------------------


def outbox_of_four(new_uow: NewUow) -> list[OutboxMessage]:
    messages = [message(n, at(n)) for n in range(4)]
    with new_uow() as uow:
        for m in reversed(messages):
            uow.outbox.add(m)
        uow.commit()
    return messages


def claim(new_uow: NewUow, *, now: datetime, limit: int = 10) -> list[str]:
    with new_uow() as uow:
        claimed = uow.outbox.claim_unsent(
            created_before=at(100), lease_until=now + timedelta(minutes=5), now=now, limit=limit
        )
        uow.commit()
    return [m.event_id for m in claimed]


def ids(messages: list[OutboxMessage]) -> list[str]:
    return [m.event_id for m in messages]


def test_claim_unsent_takes_rows_written_before_the_cutoff_oldest_first(new_uow: NewUow) -> None:
    messages = outbox_of_four(new_uow)
    with new_uow() as uow:
        claimed = uow.outbox.claim_unsent(
            created_before=at(2), lease_until=at(15), now=at(10), limit=10
        )
    assert claimed == messages[:2]
    assert [m.body for m in claimed] == [m.body for m in messages[:2]]


def test_claim_unsent_takes_at_most_limit_rows(new_uow: NewUow) -> None:
    messages = outbox_of_four(new_uow)
    assert claim(new_uow, now=at(10), limit=3) == ids(messages[:3])


def test_claimed_rows_are_not_claimed_again_until_their_lease_expires(new_uow: NewUow) -> None:
    messages = outbox_of_four(new_uow)
    assert claim(new_uow, now=at(10), limit=2) == ids(messages[:2])
    assert claim(new_uow, now=at(12)) == ids(messages[2:])
    assert claim(new_uow, now=at(14)) == []
    assert claim(new_uow, now=at(15)) == []  # the first lease ends exactly now: still held
    assert claim(new_uow, now=at(15) + timedelta(seconds=1)) == ids(messages[:2])


def test_sent_rows_are_never_claimed_again_and_leave_pending(new_uow: NewUow) -> None:
    messages = outbox_of_four(new_uow)
    with new_uow() as uow:
        assert uow.outbox.pending() == (4, at(0))
    assert claim(new_uow, now=at(10), limit=2) == ids(messages[:2])
    with new_uow() as uow:
        uow.outbox.mark_sent([messages[0].event_id], at(11))
        uow.commit()
    with new_uow() as uow:
        assert uow.outbox.pending() == (3, at(1))
    assert claim(new_uow, now=at(60)) == ids(messages[1:])
    with new_uow() as uow:
        uow.outbox.mark_sent(ids(messages[1:]), at(61))
        uow.commit()
    with new_uow() as uow:
        assert uow.outbox.pending() == (0, None)
    assert claim(new_uow, now=at(600)) == []


# Two units of work at once (backends with real locks) ----------------------------------------

HOLD_SECONDS = 0.2


def in_thread(target: Callable[[], None]) -> Callable[[], None]:
    """Run target in a thread; the returned join re-raises whatever the thread raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(10)
        assert not thread.is_alive(), "the other unit of work never finished"
        if errors:
            raise errors[0]

    return join


def test_a_second_unit_of_work_waits_for_the_group_lock_and_sees_the_commit(
    new_locking_uow: NewUow,
) -> None:
    saved(new_locking_uow, group(1))
    locked, released = threading.Event(), threading.Event()
    committing_at: list[float] = []

    def holder() -> None:
        with new_locking_uow() as uow:
            g = uow.groups.find_by_job_id_for_update("job-1")
            assert g is not None
            g.start(StageName.DEPLOY, event_id="ev-2", at=at(1))
            uow.groups.update_status(g)
            locked.set()
            released.wait(10)
            committing_at.append(time.monotonic())
            uow.commit()

    join = in_thread(holder)
    assert locked.wait(10)
    started = time.monotonic()
    threading.Timer(HOLD_SECONDS, released.set).start()  # how long the holder keeps its lock
    with new_locking_uow() as uow:
        seen = uow.groups.find_by_job_id_for_update("job-1")
        returned = time.monotonic()
    join()
    assert seen is not None and seen.status is S.DEPLOYING
    assert returned >= committing_at[0]
    assert returned - started >= HOLD_SECONDS


def test_two_relays_at_once_never_claim_the_same_row(new_locking_uow: NewUow) -> None:
    messages = outbox_of_four(new_locking_uow)
    claimed, released = threading.Event(), threading.Event()
    first: list[str] = []

    def relay() -> None:
        with new_locking_uow() as uow:
            taken = uow.outbox.claim_unsent(
                created_before=at(100), lease_until=at(15), now=at(10), limit=2
            )
            first.extend(ids(taken))
            claimed.set()
            released.wait(10)
            uow.commit()

    join = in_thread(relay)
    assert claimed.wait(10)
    threading.Timer(HOLD_SECONDS, released.set).start()
    second = claim(new_locking_uow, now=at(10))
    join()
    assert first == ids(messages[:2])
    assert second == ids(messages[2:])


def test_two_copies_counted_at_once_leave_exactly_one_holding_the_chain(
    new_locking_uow: NewUow,
) -> None:
    counted, released = threading.Event(), threading.Event()
    first: list[int | None] = []

    def copy_a() -> None:
        with new_locking_uow() as uow:
            first.append(uow.deliveries.record_delivery("ev-1", at(0), copy="task-a"))
            counted.set()
            released.wait(10)
            uow.commit()

    join = in_thread(copy_a)
    assert counted.wait(10)
    threading.Timer(HOLD_SECONDS, released.set).start()
    with new_locking_uow() as uow:
        second = uow.deliveries.record_delivery("ev-1", at(1), copy="task-b")
        uow.commit()
    join()
    with new_locking_uow() as uow:
        holder = uow.deliveries.chain_holder("ev-1")
    assert (first, second, holder) == ([1], None, "task-a")
