"""The stand-in pipeline answers requests and nothing else: the outbox is the worker's job."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain import OutboxMessage
from persistence.uow import SqlUnitOfWork
from tests.integration.flow import follow_ons
from tests.integration.stack import Stack, redis_messages, stack, wait_for
from workers import outbox
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
from workers.outbox import FollowOns

pytestmark = pytest.mark.integration

#: A sweep that would pick up an unsent row within a tenth of a second of starting.
EAGER_SWEEP = {"IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL": "0.05", "IMAGEGROUPS_OUTBOX_SWEEP_GRACE": "0"}


def unsent_deploy_request(s: Stack, group_id: str) -> OutboxMessage:
    """A group that entered DEPLOYING whose deploy request was committed but never sent."""
    deps = Deps(
        lambda: SqlUnitOfWork(s.engine, FollowOns()),
        lambda: datetime.now(UTC),
        lambda: str(uuid.uuid4()),
        True,
    )
    job = str(uuid.uuid4())
    parsed = outbox.catalog_parsed(job, group_id, ["compute"])
    handle_catalog_parsed(CatalogParsedEvent.model_validate(parsed).to_command(), deps=deps)
    built = outbox.stage_finished(job, "build-image", "succeeded")
    handle_stage_finished(StageFinishedEvent.model_validate(built).to_command(), deps=deps)
    [request] = follow_ons(s, group_id)
    assert request.sent_at is None
    return request


def replies(s: Stack) -> list[dict[str, Any]]:
    """The stage.finished envelopes waiting on the worker's queue (nobody consumes it here)."""
    found = []
    for message in redis_messages(s.redis, "imagegroups.events"):
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append(kwargs["event"])
    return found


def test_the_simulator_never_sends_the_outbox_and_the_worker_does(tmp_path: Path) -> None:
    with stack(tmp_path, "simoutbox", **EAGER_SWEEP) as s:
        left = unsent_deploy_request(s, "sim-outbox-1")
        probe = dict(left.body, event_id=str(uuid.uuid4()))
        # Each answer waits 0.2-0.6 s: the simulator runs for several sweep intervals first.
        simulator = s.start_simulator("--delay", "0.4")

        s.client.send_task(
            "pipeline.deploy", kwargs={"event": probe}, task_id=probe["event_id"], queue=left.queue
        )
        wait_for(
            lambda: [r for r in replies(s) if r["causation_id"] == probe["event_id"]],
            timeout=30,
            what="the simulator to answer the probe request",
        )

        assert [r["causation_id"] for r in replies(s)] == [probe["event_id"]]
        [still] = follow_ons(s, "sim-outbox-1")
        assert still.sent_at is None, "the simulator sent the worker's outbox row"
        assert "outbox sweep" not in simulator.output()

        s.start_worker()
        wait_for(
            lambda: follow_ons(s, "sim-outbox-1")[0].sent_at is not None,
            timeout=30,
            what="the worker's sweep to send the row",
        )
