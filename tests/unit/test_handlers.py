"""The handlers against docs/contract.md §3, on in-memory fakes (no database, no broker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from domain import (
    CatalogConflictError,
    CatalogNotParsedError,
    DuplicateImageGroupError,
    GroupNotCreatedError,
    ImageGroup,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    ImageGroupStatus,
    InvalidStateTransitionError,
    OutboxMessage,
    PipelinePhase,
    StageName,
    StageRecord,
    StageState,
)
from persistence.memory import MemoryState, MemoryUnitOfWork
from workers import outbox
from workers.edge.accept import (
    CatalogParsedEvent,
    DeployRequestedEvent,
    PxeBootRequestedEvent,
    StageFinishedEvent,
    ValidateRequestedEvent,
)
from workers.errors import is_transient
from workers.handlers import (
    Deps,
    Result,
    cleanup,
    handle_catalog_parsed,
    handle_stage_finished,
    request_stage,
)
from workers.outbox import FollowOns

S = ImageGroupStatus
JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
OTHER_JOB = "7d0c2d55-3a57-4c8e-b2f4-2f5a9c1e8d02"
CORRELATION = "5c3e7a10-9b2d-4f61-8e0a-1d2c3b4a5f60"
GROUP = "group-1"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: (from_status, to_status, event_id) as the history table holds it.
Row = tuple[ImageGroupStatus | None, ImageGroupStatus, str]


class FakeClock:
    """Every reading is one second after the previous one."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _uuid_like_ids() -> Callable[[], str]:
    numbers: Iterator[int] = count(1)
    return lambda: f"00000000-0000-4000-8000-{next(numbers):012d}"


def _event_ids() -> Iterator[str]:
    for n in count(1):
        yield f"e0000000-0000-4000-8000-{n:012d}"


@dataclass
class World:
    """One in-memory database and the dependencies the handlers get from the bootstrap."""

    state: MemoryState
    deps: Deps
    ids: Iterator[str]

    def catalog(
        self,
        *,
        job: str = JOB,
        group: str = GROUP,
        roles: tuple[str, ...] = ("compute", "login"),
        role_images: dict[str, str] | None = None,
        event_id: str | None = None,
    ) -> Result:
        body = outbox.catalog_parsed(
            job,
            group,
            list(roles),
            role_images,
            event_id=event_id or next(self.ids),
            at=T0,
        )
        return handle_catalog_parsed(
            CatalogParsedEvent.model_validate(body).to_command(), deps=self.deps
        )

    def stage(
        self, stage: str, outcome: str, *, job: str = JOB, event_id: str | None = None, **kw: Any
    ) -> Result:
        body = self.stage_body(stage, outcome, job=job, event_id=event_id, **kw)
        return handle_stage_finished(
            StageFinishedEvent.model_validate(body).to_command(), deps=self.deps
        )

    def stage_body(
        self, stage: str, outcome: str, *, job: str = JOB, event_id: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        return outbox.stage_finished(
            job, stage, outcome, event_id=event_id or next(self.ids), at=T0, **kw
        )

    def request(self, stage: StageName, group: str = GROUP) -> Result:
        return request_stage(group, stage, deps=self.deps)

    def cleanup(self, group: str = GROUP) -> Result:
        return cleanup(group, deps=self.deps)

    def group(self, group: str = GROUP) -> ImageGroup:
        return self.state.groups[group]

    def status(self, group: str = GROUP) -> ImageGroupStatus:
        return self.group(group).status

    def history(self) -> list[Row]:
        return [(t.from_status, t.to_status, t.event_id) for t in self.state.history]

    def outbox(self) -> list[OutboxMessage]:
        return sorted(self.state.outbox.values(), key=lambda m: (m.created_at, m.event_id))

    def stage_row(self, stage: StageName, job: str = JOB) -> StageRecord:
        return self.state.stages[(job, stage.value)]


def _world(*, auto_advance: bool) -> World:
    state = MemoryState()
    deps = Deps(
        new_uow=lambda: MemoryUnitOfWork(state, FollowOns()),
        clock=FakeClock(),
        new_id=_uuid_like_ids(),
        auto_advance=auto_advance,
    )
    return World(state, deps, _event_ids())


@pytest.fixture
def world() -> World:
    return _world(auto_advance=True)


@pytest.fixture
def manual() -> World:
    """IMAGEGROUPS_AUTO_ADVANCE=false: every next stage waits for an operator request."""
    return _world(auto_advance=False)


def _snapshot(state: MemoryState) -> tuple[object, ...]:
    """Everything a handler could write, as plain values (groups compare by id otherwise)."""
    groups = {
        key: (
            g.job_id,
            g.status,
            g.attempt,
            g.updated_at,
            [(i.role, i.image_name) for i in g.images],
        )
        for key, g in state.groups.items()
    }
    return (
        groups,
        dict(state.reservations),
        dict(state.jobs),
        dict(state.stages),
        list(state.history),
        dict(state.inbox),
        dict(state.outbox),
    )


def _drive(world: World, target: ImageGroupStatus) -> None:
    """Take a group of a world without auto-advance to `target` along the contract's paths."""
    world.catalog()
    world.stage("build-image", "succeeded")
    if target is S.CLEANED:
        world.cleanup()
    elif target is S.FAILED:
        world.request(StageName.DEPLOY)
        world.stage("deploy", "failed")
    else:
        path: list[Callable[[], Result]] = [
            lambda: world.request(StageName.DEPLOY),
            lambda: world.stage("deploy", "succeeded"),
            lambda: world.request(StageName.PXE_BOOT),
            lambda: world.stage("pxe-boot", "succeeded"),
            lambda: world.request(StageName.VALIDATE),
            lambda: world.stage("validate", "succeeded"),
        ]
        for step in path:
            if world.status() is target:
                break
            step()
    assert world.status() is target


# ---------------------------------------------------------------------------------------
# catalog.parsed
# ---------------------------------------------------------------------------------------


def test_catalog_parsed_reserves_the_id_for_the_job_with_its_roles(world: World) -> None:
    result = world.catalog(
        roles=("compute", "login"), role_images={"login": "login-v2.img"}, event_id=next(world.ids)
    )

    assert result.outcome.outcome == "applied"
    assert result.outcome.image_group_id == GROUP
    assert result.messages == []
    reservation = world.state.reservations[GROUP]
    assert reservation.job_id == JOB
    assert [r.value for r in reservation.roles] == ["compute", "login"]
    assert dict(reservation.role_images) == {"login": "login-v2.img"}
    assert world.state.jobs[JOB].pipeline_phase is PipelinePhase.BUILD
    assert world.state.inbox == {result.outcome.event_id: "applied"}
    assert world.state.groups == {}


def test_the_same_catalog_event_delivered_again_is_a_duplicate_and_changes_nothing(
    world: World,
) -> None:
    event_id = next(world.ids)
    world.catalog(event_id=event_id)
    before = _snapshot(world.state)

    again = world.catalog(event_id=event_id)

    assert again.outcome.outcome == "duplicate"
    assert _snapshot(world.state) == before


def test_the_same_job_and_id_under_a_new_event_id_is_a_duplicate_no_op(world: World) -> None:
    world.catalog()
    reservation = world.state.reservations[GROUP]

    again = world.catalog()

    assert again.outcome.outcome == "duplicate"
    assert again.outcome.detail == "already reserved"
    assert world.state.reservations == {GROUP: reservation}
    assert world.state.inbox[again.outcome.event_id] == "duplicate"


def test_the_same_job_and_id_with_other_roles_is_refused_and_the_first_catalog_stands(
    world: World,
) -> None:
    world.catalog(roles=("compute", "login"))
    before = _snapshot(world.state)

    with pytest.raises(CatalogConflictError) as caught:
        world.catalog(roles=("compute",))

    assert (caught.value.job_id, caught.value.image_group_id) == (JOB, GROUP)
    assert not is_transient(caught.value)
    assert _snapshot(world.state) == before


def test_another_job_claiming_a_held_id_is_refused_and_nothing_is_stored(world: World) -> None:
    world.catalog(job=JOB)
    before = _snapshot(world.state)

    with pytest.raises(DuplicateImageGroupError) as caught:
        world.catalog(job=OTHER_JOB)

    assert caught.value.held_by_job_id == JOB
    assert caught.value.job_id == OTHER_JOB
    assert not is_transient(caught.value)
    assert _snapshot(world.state) == before


def test_the_same_job_claiming_a_second_id_is_a_mismatch_and_nothing_is_stored(
    world: World,
) -> None:
    world.catalog(group=GROUP)
    before = _snapshot(world.state)

    with pytest.raises(ImageGroupMismatchError) as caught:
        world.catalog(group="group-2")

    assert (caught.value.expected, caught.value.given) == (GROUP, "group-2")
    assert not is_transient(caught.value)
    assert _snapshot(world.state) == before


# ---------------------------------------------------------------------------------------
# build-image results
# ---------------------------------------------------------------------------------------

BUILD_STAGES = ["build-image", "build-image-x86_64", "build-image-aarch64"]


@pytest.mark.parametrize("stage", BUILD_STAGES)
def test_build_success_creates_the_group_built_then_deploying_with_one_image_per_role(
    world: World, stage: str
) -> None:
    world.catalog(roles=("compute", "login"))
    event_id = next(world.ids)

    result = world.stage(stage, "succeeded", event_id=event_id)

    assert result.outcome.outcome == "applied"
    assert (result.outcome.image_group_id, result.outcome.status) == (GROUP, S.DEPLOYING)
    group = world.group()
    assert (group.job_id, group.status, group.attempt) == (JOB, S.DEPLOYING, 1)
    assert [(i.role.value, i.image_name) for i in group.images] == [
        ("compute", "compute.img"),
        ("login", "login.img"),
    ]
    assert world.history() == [(None, S.BUILT, event_id), (S.BUILT, S.DEPLOYING, event_id)]
    assert world.state.jobs[JOB].pipeline_phase is PipelinePhase.DEPLOY
    assert world.stage_row(StageName(stage)).state is StageState.SUCCEEDED


def test_build_success_honours_role_images_and_defaults_the_other_roles(world: World) -> None:
    world.catalog(roles=("compute", "login", "storage"), role_images={"login": "login-v2.img"})

    world.stage("build-image", "succeeded")

    images = {i.role.value: i.image_name for i in world.group().images}
    assert images == {"compute": "compute.img", "login": "login-v2.img", "storage": "storage.img"}


def test_build_success_queues_exactly_one_deploy_requested_as_the_contract_shapes_it(
    world: World,
) -> None:
    world.catalog(roles=("compute", "login"), role_images={"login": "login-v2.img"})
    event_id = next(world.ids)

    result = world.stage("build-image", "succeeded", event_id=event_id, correlation_id=CORRELATION)

    [message] = world.outbox()
    assert result.messages == [message]
    assert (message.task_name, message.queue) == ("pipeline.deploy", "pipeline.deploy")
    assert message.image_group_id == GROUP
    assert message.sent_at is None
    body = message.body
    assert body["event_id"] == message.event_id
    assert body["event_type"] == "deploy.requested"
    assert body["schema_version"] == 1
    assert body["job_id"] == JOB
    assert body["causation_id"] == event_id
    assert body["correlation_id"] == CORRELATION
    assert body["payload"] == {
        "image_group_id": GROUP,
        "attempt": 1,
        "images": [
            {"role": "compute", "image_name": "compute.img"},
            {"role": "login", "image_name": "login-v2.img"},
        ],
    }
    parsed = DeployRequestedEvent.model_validate(body)
    assert str(parsed.event_id) == message.event_id
    deploy_row = world.stage_row(StageName.DEPLOY)
    assert (deploy_row.state, deploy_row.attempt, deploy_row.event_id) == (
        StageState.REQUESTED,
        1,
        message.event_id,
    )


def test_a_follow_on_has_no_correlation_id_when_its_cause_had_none(world: World) -> None:
    world.catalog()

    world.stage("build-image", "succeeded")

    [message] = world.outbox()
    assert "correlation_id" not in message.body
    assert DeployRequestedEvent.model_validate(message.body).correlation_id is None


def test_build_failure_records_the_stage_failed_and_creates_no_group(world: World) -> None:
    world.catalog()
    event_id = next(world.ids)

    result = world.stage("build-image", "failed", event_id=event_id, error_code="E_BUILD")

    assert result.outcome.outcome == "applied"
    assert result.outcome.image_group_id is None
    assert result.messages == []
    assert world.state.groups == {}
    assert world.state.history == []
    assert world.state.outbox == {}
    row = world.stage_row(StageName.BUILD_IMAGE)
    assert (row.state, row.event_id, row.error_code) == (StageState.FAILED, event_id, "E_BUILD")
    assert world.state.jobs[JOB].pipeline_phase is PipelinePhase.BUILD


def test_build_result_before_its_catalog_is_a_transient_error_and_stores_nothing(
    world: World,
) -> None:
    before = _snapshot(world.state)

    with pytest.raises(CatalogNotParsedError) as caught:
        world.stage("build-image", "succeeded")

    assert caught.value.job_id == JOB
    assert is_transient(caught.value)
    assert _snapshot(world.state) == before


def test_a_late_result_naming_an_older_request_without_an_attempt_is_stale(
    world: World,
) -> None:
    world.catalog()
    world.stage("build-image", "succeeded")
    first_request = world.outbox()[-1].event_id
    world.stage("deploy", "failed", attempt=1)
    world.request(StageName.DEPLOY)
    current_request = world.outbox()[-1].event_id
    history = world.history()

    late = world.stage("deploy", "succeeded", request_event_id=first_request)
    answer = world.stage("deploy", "succeeded", request_event_id=current_request)

    assert late.outcome.outcome == "stale"
    assert answer.outcome.outcome == "applied"
    assert world.history()[: len(history)] == history
    assert world.group().status is ImageGroupStatus.RESTARTING


def test_a_failed_build_before_any_catalog_is_recorded_without_a_group(world: World) -> None:
    result = world.stage("build-image", "failed")

    assert result.outcome.outcome == "applied"
    assert world.state.groups == {}
    assert world.stage_row(StageName.BUILD_IMAGE).state is StageState.FAILED


def test_a_build_result_after_the_group_exists_is_stale(world: World) -> None:
    world.catalog()
    world.stage("build-image", "succeeded")
    history, outbox, images = world.history(), world.outbox(), world.group().images
    event_id = next(world.ids)

    result = world.stage("build-image-x86_64", "succeeded", event_id=event_id)

    assert result.outcome.outcome == "stale"
    assert result.messages == []
    assert world.state.inbox[event_id] == "stale"
    assert world.history() == history
    assert world.outbox() == outbox
    assert world.group().images == images


def test_a_build_result_naming_another_group_is_a_mismatch_and_stores_nothing(
    world: World,
) -> None:
    world.catalog(group=GROUP)
    before = _snapshot(world.state)

    with pytest.raises(ImageGroupMismatchError):
        world.stage("build-image", "succeeded", image_group_id="group-2")

    assert _snapshot(world.state) == before


# ---------------------------------------------------------------------------------------
# deploy, pxe-boot and validate results (auto-advance)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def deploying(world: World) -> World:
    world.catalog()
    world.stage("build-image", "succeeded")
    return world


def test_deploy_success_moves_deployed_then_restarting_and_requests_pxe_boot(
    deploying: World,
) -> None:
    history = deploying.history()
    event_id = next(deploying.ids)

    result = deploying.stage("deploy", "succeeded", event_id=event_id, attempt=1)

    assert (result.outcome.outcome, result.outcome.status) == ("applied", S.RESTARTING)
    assert deploying.status() is S.RESTARTING
    assert deploying.history() == [
        *history,
        (S.DEPLOYING, S.DEPLOYED, event_id),
        (S.DEPLOYED, S.RESTARTING, event_id),
    ]
    [message] = result.messages
    assert deploying.outbox()[-1] == message
    assert (message.task_name, message.queue) == ("pipeline.pxe_boot", "pipeline.pxe_boot")
    assert message.body["event_type"] == "pxe_boot.requested"
    assert message.body["causation_id"] == event_id
    assert message.body["payload"] == {"image_group_id": GROUP, "attempt": 1}
    PxeBootRequestedEvent.model_validate(message.body)


@pytest.mark.parametrize("stage", ["pxe-boot", "restart"])
def test_pxe_boot_success_moves_restarted_then_validating_and_requests_validate(
    deploying: World, stage: str
) -> None:
    deploying.stage("deploy", "succeeded")
    history = deploying.history()
    event_id = next(deploying.ids)

    result = deploying.stage(stage, "succeeded", event_id=event_id)

    assert deploying.status() is S.VALIDATING
    assert deploying.history() == [
        *history,
        (S.RESTARTING, S.RESTARTED, event_id),
        (S.RESTARTED, S.VALIDATING, event_id),
    ]
    [message] = result.messages
    assert (message.task_name, message.queue) == ("pipeline.validate", "pipeline.validate")
    assert message.body["event_type"] == "validate.requested"
    assert message.body["payload"] == {"image_group_id": GROUP, "attempt": 1}
    ValidateRequestedEvent.model_validate(message.body)
    assert deploying.stage_row(StageName.PXE_BOOT).state is StageState.SUCCEEDED


def test_validate_success_passes_the_group_and_requests_nothing_more(deploying: World) -> None:
    deploying.stage("deploy", "succeeded")
    deploying.stage("pxe-boot", "succeeded")
    outbox = deploying.outbox()
    event_id = next(deploying.ids)

    result = deploying.stage("validate", "succeeded", event_id=event_id)

    assert (result.outcome.outcome, result.outcome.status) == ("applied", S.PASSED)
    assert result.messages == []
    assert deploying.outbox() == outbox
    assert deploying.history()[-1] == (S.VALIDATING, S.PASSED, event_id)


def test_the_happy_path_leaves_exactly_one_history_row_per_transition(world: World) -> None:
    world.catalog()
    ids = [next(world.ids) for _ in range(4)]

    world.stage("build-image", "succeeded", event_id=ids[0])
    world.stage("deploy", "succeeded", event_id=ids[1])
    world.stage("pxe-boot", "succeeded", event_id=ids[2])
    world.stage("validate", "succeeded", event_id=ids[3])

    assert world.history() == [
        (None, S.BUILT, ids[0]),
        (S.BUILT, S.DEPLOYING, ids[0]),
        (S.DEPLOYING, S.DEPLOYED, ids[1]),
        (S.DEPLOYED, S.RESTARTING, ids[1]),
        (S.RESTARTING, S.RESTARTED, ids[2]),
        (S.RESTARTED, S.VALIDATING, ids[2]),
        (S.VALIDATING, S.PASSED, ids[3]),
    ]
    assert [m.body["event_type"] for m in world.outbox()] == [
        "deploy.requested",
        "pxe_boot.requested",
        "validate.requested",
    ]


@pytest.mark.parametrize(
    ("stage", "earlier", "running"),
    [
        ("deploy", [], S.DEPLOYING),
        ("pxe-boot", ["deploy"], S.RESTARTING),
        ("validate", ["deploy", "pxe-boot"], S.VALIDATING),
    ],
)
def test_a_failed_stage_fails_the_group_with_one_history_row_and_no_follow_on(
    deploying: World, stage: str, earlier: list[str], running: ImageGroupStatus
) -> None:
    for done in earlier:
        deploying.stage(done, "succeeded")
    history, outbox = deploying.history(), deploying.outbox()
    event_id = next(deploying.ids)

    result = deploying.stage(stage, "failed", event_id=event_id)

    assert (result.outcome.outcome, result.outcome.status) == ("applied", S.FAILED)
    assert result.messages == []
    assert deploying.history() == [*history, (running, S.FAILED, event_id)]
    assert deploying.outbox() == outbox
    assert deploying.stage_row(StageName.parse(stage)).state is StageState.FAILED


def test_the_same_stage_result_delivered_twice_is_applied_once(deploying: World) -> None:
    event_id = next(deploying.ids)
    deploying.stage("deploy", "succeeded", event_id=event_id)
    before = _snapshot(deploying.state)

    again = deploying.stage("deploy", "succeeded", event_id=event_id)

    assert again.outcome.outcome == "duplicate"
    assert again.messages == []
    assert _snapshot(deploying.state) == before


def test_a_stage_result_before_the_group_exists_is_a_transient_error(world: World) -> None:
    world.catalog()
    before = _snapshot(world.state)

    with pytest.raises(GroupNotCreatedError) as caught:
        world.stage("deploy", "succeeded")

    assert caught.value.job_id == JOB
    assert is_transient(caught.value)
    assert _snapshot(world.state) == before


def test_a_stage_result_naming_another_group_is_a_mismatch_and_changes_nothing(
    deploying: World,
) -> None:
    before = _snapshot(deploying.state)

    with pytest.raises(ImageGroupMismatchError) as caught:
        deploying.stage("deploy", "succeeded", image_group_id="group-2")

    assert (caught.value.job_id, caught.value.expected, caught.value.given) == (
        JOB,
        GROUP,
        "group-2",
    )
    assert not is_transient(caught.value)
    assert _snapshot(deploying.state) == before


def test_a_deploy_result_after_the_group_moved_on_is_stale_and_recorded_in_the_inbox(
    deploying: World,
) -> None:
    deploying.stage("deploy", "succeeded")
    assert deploying.status() is S.RESTARTING
    history, outbox, group = deploying.history(), deploying.outbox(), _snapshot(deploying.state)[0]
    event_id = next(deploying.ids)

    result = deploying.stage("deploy", "failed", event_id=event_id)

    assert result.outcome.outcome == "stale"
    assert result.outcome.image_group_id == GROUP
    assert result.messages == []
    assert deploying.history() == history
    assert deploying.outbox() == outbox
    assert _snapshot(deploying.state)[0] == group
    assert deploying.state.inbox[event_id] == "stale"
    assert deploying.stage("deploy", "failed", event_id=event_id).outcome.outcome == "duplicate"


def test_a_result_for_an_older_attempt_after_a_redeploy_is_stale(deploying: World) -> None:
    deploying.stage("deploy", "failed", attempt=1)
    deploying.request(StageName.DEPLOY)
    assert (deploying.status(), deploying.group().attempt) == (S.DEPLOYING, 2)
    history = deploying.history()
    event_id = next(deploying.ids)

    result = deploying.stage("deploy", "succeeded", event_id=event_id, attempt=1)

    assert result.outcome.outcome == "stale"
    assert deploying.status() is S.DEPLOYING
    assert deploying.history() == history
    assert deploying.state.inbox[event_id] == "stale"
    assert deploying.stage("deploy", "succeeded", attempt=2).outcome.status is S.RESTARTING


def test_a_result_for_a_stage_not_yet_reached_is_refused_and_rolls_everything_back(
    deploying: World,
) -> None:
    before = _snapshot(deploying.state)
    event_id = next(deploying.ids)

    with pytest.raises(InvalidStateTransitionError) as caught:
        deploying.stage("validate", "succeeded", event_id=event_id)

    assert (caught.value.image_group_id, caught.value.current) == (GROUP, S.DEPLOYING)
    assert not is_transient(caught.value)
    assert event_id not in deploying.state.inbox
    assert _snapshot(deploying.state) == before


def test_a_result_for_an_attempt_never_requested_is_refused(deploying: World) -> None:
    before = _snapshot(deploying.state)

    with pytest.raises(InvalidStateTransitionError, match="never requested"):
        deploying.stage("deploy", "succeeded", attempt=2)

    assert _snapshot(deploying.state) == before


# ---------------------------------------------------------------------------------------
# IMAGEGROUPS_AUTO_ADVANCE=false and operator requests
# ---------------------------------------------------------------------------------------


def test_without_auto_advance_a_build_success_leaves_the_group_built_and_sends_nothing(
    manual: World,
) -> None:
    manual.catalog()
    event_id = next(manual.ids)

    result = manual.stage("build-image", "succeeded", event_id=event_id)

    assert (result.outcome.status, result.messages) == (S.BUILT, [])
    assert manual.status() is S.BUILT
    assert manual.state.outbox == {}
    assert manual.history() == [(None, S.BUILT, event_id)]


def test_without_auto_advance_each_stage_waits_for_its_operator_request_until_passed(
    manual: World,
) -> None:
    manual.catalog()
    manual.stage("build-image", "succeeded")
    walk = [
        (StageName.DEPLOY, S.BUILT, S.DEPLOYING, S.DEPLOYED, "deploy.requested"),
        (StageName.PXE_BOOT, S.DEPLOYED, S.RESTARTING, S.RESTARTED, "pxe_boot.requested"),
        (StageName.VALIDATE, S.RESTARTED, S.VALIDATING, S.PASSED, "validate.requested"),
    ]
    for stage, origin, running, done, event_type in walk:
        before = len(manual.state.outbox)

        requested = manual.request(stage)

        assert manual.status() is running
        [message] = requested.messages
        command_id = requested.outcome.event_id
        assert message.body["event_type"] == event_type
        assert message.body["causation_id"] == command_id
        assert manual.history()[-1] == (origin, running, command_id)
        assert len(manual.state.outbox) == before + 1

        finished = manual.stage(stage.value, "succeeded")

        assert (finished.outcome.status, finished.messages) == (done, [])
        assert manual.status() is done
        assert len(manual.state.outbox) == before + 1


def test_an_operator_cannot_request_validate_while_the_group_is_deploying(
    manual: World,
) -> None:
    _drive(manual, S.DEPLOYING)
    before = _snapshot(manual.state)

    with pytest.raises(InvalidStateTransitionError) as caught:
        manual.request(StageName.VALIDATE)

    assert (caught.value.current, caught.value.target) == (S.DEPLOYING, S.VALIDATING)
    assert _snapshot(manual.state) == before


def test_an_operator_request_for_an_unknown_group_is_not_found(manual: World) -> None:
    with pytest.raises(ImageGroupNotFoundError) as caught:
        manual.request(StageName.DEPLOY, group="no-such-group")

    assert caught.value.image_group_id == "no-such-group"
    assert manual.state.outbox == {}


def test_a_redeploy_from_failed_starts_attempt_two_and_requests_it(world: World) -> None:
    world.catalog()
    world.stage("build-image", "succeeded")
    world.stage("deploy", "failed")
    outbox = world.outbox()

    result = world.request(StageName.DEPLOY)

    command_id = result.outcome.event_id
    assert (result.outcome.status, world.status(), world.group().attempt) == (
        S.DEPLOYING,
        S.DEPLOYING,
        2,
    )
    assert world.history()[-1] == (S.FAILED, S.DEPLOYING, command_id)
    [message] = result.messages
    assert world.outbox() == [*outbox, message]
    assert message.body["causation_id"] == command_id
    assert message.body["payload"]["attempt"] == 2
    assert [i["role"] for i in message.body["payload"]["images"]] == ["compute", "login"]
    assert DeployRequestedEvent.model_validate(message.body).payload.attempt == 2
    assert world.stage_row(StageName.DEPLOY).attempt == 2


@pytest.mark.parametrize("status", [S.BUILT, S.DEPLOYED, S.RESTARTED, S.PASSED, S.FAILED])
def test_cleanup_marks_a_group_cleaned_from_a_settled_status(
    manual: World, status: ImageGroupStatus
) -> None:
    _drive(manual, status)
    outbox = manual.outbox()

    result = manual.cleanup()

    assert (result.outcome.status, manual.status()) == (S.CLEANED, S.CLEANED)
    assert manual.history()[-1] == (status, S.CLEANED, result.outcome.event_id)
    assert result.messages == []
    assert manual.outbox() == outbox


@pytest.mark.parametrize("status", [S.DEPLOYING, S.RESTARTING, S.VALIDATING, S.CLEANED])
def test_cleanup_is_refused_while_a_stage_runs_and_once_cleaned(
    manual: World, status: ImageGroupStatus
) -> None:
    _drive(manual, status)
    before = _snapshot(manual.state)

    with pytest.raises(InvalidStateTransitionError) as caught:
        manual.cleanup()

    assert (caught.value.current, caught.value.target) == (status, S.CLEANED)
    assert _snapshot(manual.state) == before


# ---------------------------------------------------------------------------------------
# Stage rows
# ---------------------------------------------------------------------------------------


def test_the_stage_row_keeps_result_detail_error_code_error_summary_and_attempt(
    deploying: World,
) -> None:
    detail = {"nodes": ["n1", "n2"], "log": {"lines": 2}}
    event_id = next(deploying.ids)

    deploying.stage(
        "deploy",
        "failed",
        event_id=event_id,
        attempt=1,
        detail=detail,
        error_code="E_TIMEOUT",
        error_summary="n2 did not answer",
    )

    row = deploying.stage_row(StageName.DEPLOY)
    assert row == StageRecord(
        job_id=JOB,
        stage=StageName.DEPLOY,
        state=StageState.FAILED,
        attempt=1,
        event_id=event_id,
        updated_at=row.updated_at,
        result_detail=detail,
        error_code="E_TIMEOUT",
        error_summary="n2 did not answer",
    )
    assert row.updated_at > T0


def test_a_stage_row_without_an_echoed_attempt_takes_the_groups_attempt(
    deploying: World,
) -> None:
    deploying.stage("deploy", "failed")
    deploying.request(StageName.DEPLOY)

    deploying.stage("deploy", "failed")

    row = deploying.stage_row(StageName.DEPLOY)
    assert (row.state, row.attempt) == (StageState.FAILED, 2)
