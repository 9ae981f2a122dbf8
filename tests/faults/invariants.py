"""The promises every fault scenario ends by checking: nothing lost, nothing doubled, no wedge."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from domain import ImageGroupStatus
from persistence.models import ImageGroupRow, OutboxRow, ProcessedEventRow
from tests.faults.checks import holds, letters
from tests.faults.messages import envelope, push, task_body, task_headers
from tests.faults.pipeline import Pipeline
from tests.integration.flow import HAPPY, moves
from tests.integration.stack import Stack, wait_for
from workers import outbox

CATALOG = "imagegroups.catalog_parsed"
STAGE = "imagegroups.stage_finished"
#: The stage whose failure ends a group, and the status it fails from.
RUNNING = {"deploy": "DEPLOYING", "pxe-boot": "RESTARTING", "validate": "VALIDATING"}
REQUESTS = {
    "deploy": "pipeline.deploy",
    "pxe-boot": "pipeline.pxe_boot",
    "validate": "pipeline.validate",
}


@dataclass(frozen=True)
class Planned:
    """One group of a scenario, and the stage its first attempt fails at (None: it passes)."""

    group_id: str
    job_id: str
    fail_stage: str | None = None

    @property
    def final(self) -> str:
        return "PASSED" if self.fail_stage is None else "FAILED"

    def moves(self) -> list[tuple[str | None, str]]:
        if self.fail_stage is None:
            return list(HAPPY)
        running = RUNNING[self.fail_stage]
        upto = next(i for i, (_, to) in enumerate(HAPPY) if to == running)
        return [*HAPPY[: upto + 1], (running, "FAILED")]

    def requested(self) -> set[str]:
        stages = list(REQUESTS)
        last = len(stages) if self.fail_stage is None else stages.index(self.fail_stage) + 1
        return {REQUESTS[stage] for stage in stages[:last]}


def plan(count: int, prefix: str, *, fail_rate: float = 0.0, seed: int = 0) -> list[Planned]:
    rng = random.Random(seed)
    plans = []
    for index in range(count):
        fail = rng.choice(list(RUNNING)) if rng.random() < fail_rate else None
        plans.append(Planned(f"{prefix}-{index:05d}", str(uuid.uuid4()), fail))
    return plans


def fails_as_planned(plans: Sequence[Planned]) -> dict[str, str | None]:
    return {p.group_id: p.fail_stage for p in plans}


def publish(s: Stack, planned: Planned, *, copies: int = 1) -> list[str]:
    """The catalog and the build result, each `copies` times; returns their event ids."""
    catalog = outbox.catalog_parsed(planned.job_id, planned.group_id, ["compute", "login"])
    built = outbox.stage_finished(planned.job_id, "build-image", "succeeded")
    for task, event in ((CATALOG, catalog), (STAGE, built)):
        message = envelope(task_body(event), task_headers(task, str(event["event_id"])))
        for _ in range(copies):
            push(s.redis, message)
    return [str(catalog["event_id"]), str(built["event_id"])]


def unsettled(s: Stack, plans: Sequence[Planned]) -> list[tuple[str, str | None, str]]:
    """(group, its status or None before it exists, the status it should end in) for each
    group not yet where it should end."""
    with s.engine.connect() as conn:
        have = dict(conn.execute(select(ImageGroupRow.id, ImageGroupRow.status)).all())
    return [
        (p.group_id, have.get(p.group_id), p.final)
        for p in plans
        if have.get(p.group_id) != p.final
    ]


def describe_unsettled(s: Stack, plans: Sequence[Planned], shown: int = 30) -> str:
    """Which groups did not settle, by id and status, and the dead letters: a failure's story."""
    stuck = unsettled(s, plans)
    by_status = Counter(
        f"{status or 'not created'} (wants {wanted})" for _, status, wanted in stuck
    )
    listed = ", ".join(f"{g} {status or 'not created'}" for g, status, _ in stuck[:shown])
    more = f" and {len(stuck) - shown} more" if len(stuck) > shown else ""
    letters_now = [(d.event_id, d.error_type, d.attempts) for d in letters(s)]
    return (
        f"{len(stuck)} of {len(plans)} groups did not settle: {dict(by_status)}; "
        f"{listed}{more}; dead letters: {letters_now[:8]}"
    )


def wait_settled(s: Stack, plans: Sequence[Planned], timeout: float) -> None:
    try:
        wait_for(
            lambda: not unsettled(s, plans),
            timeout=timeout,
            what="every group to settle",
            every=0.2,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {describe_unsettled(s, plans)}") from None


def assert_invariants(
    s: Stack,
    plans: Sequence[Planned],
    pipeline: Pipeline,
    *,
    events: Sequence[str] = (),
    invalid: Sequence[str] = (),
    timeout: float = 120,
) -> None:
    """Every promise at once, after the scenario's faults are over.

    `events`: the ids of valid incoming events published (each must have an outcome);
    `invalid`: a marker per invalid message (each must be in exactly one dead letter).
    """
    wait_settled(s, plans, timeout)
    for planned in plans:
        assert moves(s, planned.group_id) == planned.moves(), planned
    _assert_one_follow_on_each(s, plans, pipeline)
    _assert_every_event_has_one_outcome(s, events, invalid)
    wait_for(lambda: _drained(s), timeout=60, what="the broker to be drained")
    assert not pipeline.errors, pipeline.errors


def _assert_one_follow_on_each(s: Stack, plans: Sequence[Planned], pipeline: Pipeline) -> None:
    def all_sent() -> bool:
        with s.engine.connect() as conn:
            return not conn.scalar(select(OutboxRow.event_id).where(OutboxRow.sent_at.is_(None)))

    wait_for(all_sent, timeout=60, what="every follow-on to be sent")
    with s.engine.connect() as conn:
        rows = conn.execute(
            select(
                OutboxRow.image_group_id, OutboxRow.task_name, OutboxRow.event_id, OutboxRow.body
            )
        ).all()
    requested = Counter((r.image_group_id, r.task_name, r.body["payload"]["attempt"]) for r in rows)
    for planned in plans:
        mine = {(task, attempt) for (g, task, attempt) in requested if g == planned.group_id}
        assert mine == {(task, 1) for task in planned.requested()}, planned
    assert set(requested.values()) <= {1}, [k for k, n in requested.items() if n > 1]
    sent = {(r.image_group_id, r.task_name, r.body["payload"]["attempt"]): r.event_id for r in rows}
    for (group, stage, attempt), seen in pipeline.requests.items():
        # At least once on the wire, but always the same request: consumers dedupe by id.
        assert seen == {sent[(group, REQUESTS[stage], attempt)]}, (group, stage, attempt, seen)


def _assert_every_event_has_one_outcome(
    s: Stack, events: Sequence[str], invalid: Sequence[str]
) -> None:
    with s.engine.connect() as conn:
        handled = set(conn.scalars(select(ProcessedEventRow.event_id)))
    dead = letters(s)
    missing = [e for e in events if e not in handled]
    assert not missing, f"{len(missing)} valid events have no outcome, e.g. {missing[:3]}"
    doubled = [e for e in events if any(e == d.event_id for d in dead)]
    assert not doubled, f"valid events were also dead-lettered: {doubled[:3]}"
    counts = {marker: sum(holds(d.body, marker) for d in dead) for marker in invalid}
    wrong = {m: n for m, n in counts.items() if n != 1}
    assert not wrong, f"invalid messages not dead-lettered exactly once: {wrong}"
    unexplained = [d for d in dead if not any(holds(d.body, m) for m in invalid)]
    assert not unexplained, f"unexpected dead letters: {unexplained[:3]}"


def _drained(s: Stack) -> bool:
    queues = ["imagegroups.events", *REQUESTS.values()]
    return all(s.redis.llen(q) == 0 for q in queues) and s.redis.hlen("unacked") == 0


def final_status(s: Stack, group_id: str) -> ImageGroupStatus | None:
    group = s.group(group_id)
    return None if group is None else group.status
