"""The transactional outbox on PostgreSQL: no send without commit, and nothing left unsent."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy import select

from domain import OutboxMessage
from persistence.db import make_engine
from persistence.migrate import upgrade
from persistence.models import OutboxRow, outbox_to_entity
from persistence.uow import SqlUnitOfWork, StoreUnitOfWork
from tests.integration.flow import follow_ons
from tests.integration.stack import redis_messages, stack, wait_for
from tests.pg import fresh_database
from tests.redis_db import lease_redis_db
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent
from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
from workers.outbox import (
    CeleryPublisher,
    FollowOns,
    OutboxRelay,
    catalog_parsed,
    stage_finished,
)

pytestmark = pytest.mark.integration


class FakePublisher:
    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.sent: list[OutboxMessage] = []

    def publish(self, message: OutboxMessage) -> None:
        if self.broken:
            raise ConnectionError("broker unreachable")
        self.sent.append(message)


@pytest.fixture(scope="module")
def new_uow() -> Iterator[Callable[[], StoreUnitOfWork]]:
    with fresh_database("outbox") as url:
        upgrade(url)
        engine = make_engine(url)
        factory = engine
        yield lambda: SqlUnitOfWork(factory, FollowOns())
        engine.dispose()


def _outbox_of(new_uow: Callable[[], StoreUnitOfWork], group_id: str) -> list[OutboxMessage]:
    """The group's outbox rows (a test's own read, beside the repositories)."""
    with new_uow() as uow:
        assert isinstance(uow, SqlUnitOfWork)
        rows = uow.connection.execute(select(OutboxRow).where(OutboxRow.image_group_id == group_id))
        return [outbox_to_entity(row) for row in rows]


def _deps(new_uow: Callable[[], StoreUnitOfWork]) -> Deps:
    return Deps(new_uow=new_uow, clock=lambda: datetime.now(UTC), new_id=lambda: str(uuid.uuid4()))


def _build(deps: Deps, group_id: str) -> Any:
    job = str(uuid.uuid4())
    handle_catalog_parsed(
        CatalogParsedEvent.model_validate(catalog_parsed(job, group_id, ["compute"])).to_command(),
        deps=deps,
    )
    build = StageFinishedEvent.model_validate(
        stage_finished(job, "build-image", "succeeded")
    ).to_command()
    return handle_stage_finished(build, deps=deps)


class _FailingCommit:
    """A unit of work whose commit fails after every write was made."""

    def __init__(self, inner: StoreUnitOfWork) -> None:
        self.inner = inner

    def __enter__(self) -> Any:
        self.inner.__enter__()
        self.inner.commit = self._fail  # type: ignore[method-assign]
        return self.inner

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)

    def _fail(self) -> None:
        raise RuntimeError("commit failed")


def test_follow_on_is_not_sent_when_the_transaction_rolls_back(
    new_uow: Callable[[], StoreUnitOfWork],
) -> None:
    deps = _deps(new_uow)
    job = str(uuid.uuid4())
    handle_catalog_parsed(
        CatalogParsedEvent.model_validate(
            catalog_parsed(job, "rollback-1", ["compute"])
        ).to_command(),
        deps=deps,
    )
    failing = Deps(**{**deps.__dict__, "new_uow": lambda: _FailingCommit(new_uow())})
    publisher = FakePublisher()
    relay = OutboxRelay(new_uow, publisher, deps.clock)
    build = StageFinishedEvent.model_validate(
        stage_finished(job, "build-image", "succeeded")
    ).to_command()
    with pytest.raises(RuntimeError, match="commit failed"):
        relay.deliver(handle_stage_finished(build, deps=failing).messages)
    assert publisher.sent == []
    assert _outbox_of(new_uow, "rollback-1") == []
    with new_uow() as uow:
        assert uow.groups.find_by_job_id(job) is None
    while relay.sweep(grace=0):
        pass
    assert [m for m in publisher.sent if m.image_group_id == "rollback-1"] == []


def test_rows_left_unsent_by_a_failed_publish_are_sent_by_the_sweep(
    new_uow: Callable[[], StoreUnitOfWork],
) -> None:
    deps = _deps(new_uow)
    result = _build(deps, "sweep-1")
    broken = OutboxRelay(new_uow, FakePublisher(broken=True), deps.clock)
    assert broken.deliver(result.messages) == 0
    with new_uow() as uow:
        assert uow.outbox.pending()[0] >= 1

    publisher = FakePublisher()
    relay = OutboxRelay(new_uow, publisher, deps.clock)
    while relay.sweep(grace=0):
        pass
    assert [m.event_id for m in publisher.sent if m.image_group_id == "sweep-1"] == [
        result.messages[0].event_id
    ]
    assert all(m.sent_at is not None for m in _outbox_of(new_uow, "sweep-1"))
    assert relay.sweep(grace=0) == 0


def test_concurrent_sweeps_never_claim_the_same_row(new_uow: Callable[[], StoreUnitOfWork]) -> None:
    deps = _deps(new_uow)
    built = {_build(deps, f"skip-{i}").messages[0].event_id for i in range(12)}
    claims: list[list[str]] = []
    barrier = threading.Barrier(3)

    def claim() -> None:
        now = datetime.now(UTC)
        with new_uow() as uow:
            barrier.wait()
            rows = uow.outbox.claim_unsent(
                created_before=now + timedelta(seconds=1),
                lease_until=now + timedelta(minutes=1),
                now=now,
                limit=5,
            )
            uow.commit()
        claims.append([m.event_id for m in rows])

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    claimed = [event_id for batch in claims for event_id in batch]
    assert len(claims) == 3
    assert len(claimed) == len(set(claimed)), "a row was claimed twice"
    assert set(claimed) <= built and len(claimed) >= 5


def test_a_running_worker_sweeps_committed_rows_that_were_never_published(
    tmp_path: Path,
) -> None:
    with stack(
        tmp_path,
        "sweeper",
        IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL="0.2",
        IMAGEGROUPS_OUTBOX_SWEEP_GRACE="0",
    ) as s:
        # Committed as by a worker that died between commit and publish.
        result = _build(_deps(s.uow), "crashed-1")
        s.start_worker("--concurrency", "1")
        sent = wait_for(
            lambda: redis_messages(s.redis, "pipeline.deploy"), timeout=20, what="the sweep"
        )
        assert [m["headers"]["id"] for m in sent] == [result.messages[0].event_id]
        wait_for(
            lambda: all(m.sent_at for m in follow_ons(s, "crashed-1")),
            timeout=10,
            what="the row to be marked sent",
        )


def _follow_on(queue: str, n: int) -> OutboxMessage:
    event_id = str(uuid.uuid4())
    images = [{"role": "compute", "image_name": f"compute-{n}.img"}]
    return OutboxMessage(
        event_id=event_id,
        task_name=queue,
        queue=queue,
        body={"event_id": event_id, "payload": {"attempt": 1, "images": images}},
        image_group_id=f"batch-{n}",
        created_at=datetime.now(UTC),
    )


def _sent_events(pubsub: Any, count: int) -> list[dict[str, Any]]:
    """The task-sent events Celery published for Flower (kombu's fanout on Redis)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(found) < count and time.monotonic() < deadline:
        got = pubsub.get_message(timeout=1)
        if got is None or got["type"] != "pmessage":
            continue
        envelope = json.loads(got["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        # One event, or several in one message (task-multi, as a worker's consumer sends).
        for event in body if isinstance(body, list) else [body]:
            if event.get("type") == "task-sent":
                found.append(event)
    return found


@contextmanager
def _publishing(name: str) -> Iterator[tuple[Celery, redis.Redis]]:
    """An app as the worker configures it, on a Redis database of its own, and a client."""
    with lease_redis_db() as url:
        app = Celery(name)
        app.config_from_object("celeryconfig")
        app.conf.broker_url = url
        yield app, redis.Redis.from_url(url)


def test_a_batch_of_follow_ons_reaches_each_queue_in_order_each_with_its_sent_event() -> None:
    with _publishing("batch-test") as (app, client):
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        # Pub/sub spans Redis's databases; kombu names each channel after its database.
        pubsub.psubscribe(f"/{client.connection_pool.connection_kwargs['db']}.celeryev/*")
        assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
        messages = [_follow_on("pipeline.deploy", 1), _follow_on("pipeline.pxe_boot", 2)]
        messages.append(_follow_on("pipeline.deploy", 3))
        with app.connection_for_write() as connection:
            # kombu pipelines a batch only where this holds; elsewhere it sends each at once.
            assert connection.default_channel.supports_batch_publish

        CeleryPublisher(app).publish_batch(messages)

        deploy = redis_messages(client, "pipeline.deploy")
        assert [m["headers"]["id"] for m in deploy] == [messages[0].event_id, messages[2].event_id]
        [pxe] = redis_messages(client, "pipeline.pxe_boot")
        assert pxe["headers"]["id"] == messages[1].event_id
        body = json.loads(base64.b64decode(deploy[0]["body"]))
        assert body == [[], {"event": messages[0].body}, body[2]]
        # Flower shows the whole body (Celery's saferepr would have cut the images to [...]).
        assert "'image_name': 'compute-1.img'" in deploy[0]["headers"]["kwargsrepr"]
        events = _sent_events(pubsub, 3)
        assert [e["uuid"] for e in events] == [m.event_id for m in messages]
        assert [e["queue"] for e in events] == [m.queue for m in messages]
        assert "compute-3.img" in events[2]["kwargs"]
        pubsub.close()


def test_a_batch_for_a_broker_that_is_down_fails_within_a_publish_s_retries() -> None:
    app = Celery("batch-down")
    app.config_from_object("celeryconfig")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    started = time.monotonic()
    with pytest.raises(OperationalError, match="Connection refused"):
        CeleryPublisher(app).publish_batch([_follow_on("pipeline.deploy", 1)])
    # RETRY_POLICY: two retries, 0.1 s then 0.3 s apart (kombu's own wait is 6 s and more).
    assert time.monotonic() - started < 3


def test_a_follow_on_is_the_same_on_the_wire_sent_alone_or_in_a_batch() -> None:
    with _publishing("wire-test") as (app, client):
        alone, batched = _follow_on("pipeline.deploy", 1), _follow_on("pipeline.deploy", 2)
        publisher = CeleryPublisher(app)

        publisher.publish(alone)
        publisher.publish_batch([batched])

        first, second = redis_messages(client, "pipeline.deploy")
        for message in (first, second):
            # kombu's and Celery's own properties only: the reprs are headers, not copied here.
            assert sorted(message["properties"]) == [
                "body_encoding",
                "correlation_id",
                "delivery_info",
                "delivery_mode",
                "delivery_tag",
                "priority",
                "reply_to",
            ]
        ids = {alone.event_id: "ID", batched.event_id: "ID", "compute-1": "N", "compute-2": "N"}

        def shape(message: dict[str, Any]) -> str:
            text = json.dumps(
                {k: v for k, v in message.items() if k != "body"}
                | {"body": json.loads(base64.b64decode(message["body"]))},
                sort_keys=True,
            )
            text = text.replace(message["properties"]["delivery_tag"], "TAG")
            for value, stand_in in ids.items():
                text = text.replace(value, stand_in)
            return text

        assert shape(first) == shape(second)
