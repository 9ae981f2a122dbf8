"""PostgreSQL round trips per event: what the worker's handlers wait on the network for.

    .venv/bin/python bench/round_trips.py              # the working tree
    .venv/bin/python bench/round_trips.py --rev HEAD   # a git revision (git archive), to compare

Like bench/pg_capture.py this script imports the product: each event runs through the
worker's own path in process (the envelope parsed into a command, the handler, one unit of
work on a fresh migrated database). libpq's protocol trace of the connection (PQtrace) is read
back, and a round trip is counted each time the client, having sent messages, reads the
server's answer: a run of frontend messages followed by backend ones. The count includes the
connection's reset on its return to the pool. Publishing the follow-ons (Redis) is not run;
the relay's "sent" mark, its own short transaction, is.

Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres; IMAGEGROUPS_TEST_PG overrides).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Each scenario in the order it runs: every one needs the rows of those before it.
EVENT_TYPES = (
    "catalog.parsed",
    "build-image succeeded",
    "deploy succeeded",
    "duplicate catalog.parsed",
    "duplicate stage result",
    "outbox sent marks",
)


@dataclass
class WireTrace:
    """Round trips on the connections an engine checks out while `counting` runs."""

    path: Path
    trips: int = 0
    messages: dict[str, int] = field(default_factory=dict)

    def add(self, text: str) -> None:
        # A round trip ends with the server's ReadyForQuery: one for each Sync (a pipeline,
        # or a statement outside one) and each simple Query the client sent. Counting
        # switches of direction instead would count a pipeline twice when the client reads
        # a result (an error, say) while it is still sending the rest.
        for line in text.splitlines():
            direction, _, rest = line.partition("\t")
            name = rest.split("\t")[1].split(" ")[0] if rest.count("\t") >= 1 else ""
            if direction == "F":
                self.messages[name] = self.messages.get(name, 0) + 1
            elif direction == "B" and name == "ReadyForQuery":
                self.trips += 1


@contextmanager
def traced(engine: Any) -> Iterator[Callable[[], WireTrace]]:
    """Trace every connection the engine hands out; call the yielded function to take the
    round trips seen since the last call."""
    import psycopg.pq
    from sqlalchemy import event

    handle = tempfile.NamedTemporaryFile("w+", prefix="round-trips-", suffix=".trace")  # noqa: SIM115
    flags = psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE

    def on_checkout(dbapi: Any, _record: Any, _proxy: Any) -> None:
        dbapi.pgconn.trace(handle.fileno())
        dbapi.pgconn.set_trace_flags(flags)

    def on_checkin(dbapi: Any, _record: Any) -> None:
        if dbapi is not None:
            dbapi.pgconn.untrace()  # flushes what libpq wrote

    read_from = 0

    def take() -> WireTrace:
        nonlocal read_from
        with open(handle.name, encoding="utf-8", errors="replace") as text:
            text.seek(read_from)
            found = WireTrace(Path(handle.name))
            found.add(text.read())
            read_from = text.tell()
        return found

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield take
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        handle.close()


def _envelope(event_type: str, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "job_id": job_id,
        "correlation_id": job_id,
        "payload": payload,
    }


def _scenarios(job_id: str, group_id: str) -> list[tuple[str, dict[str, Any]]]:
    catalog = {"image_group_id": group_id, "roles": ["compute", "login"], "catalog_name": "rt"}
    parsed = _envelope("catalog.parsed", job_id, catalog)

    def stage(name: str) -> dict[str, Any]:
        payload = {"stage": name, "outcome": "succeeded", "image_group_id": group_id}
        return _envelope("stage.finished", job_id, payload)

    deploy = stage("deploy")
    return [
        (EVENT_TYPES[0], parsed),
        (EVENT_TYPES[1], stage("build-image")),
        (EVENT_TYPES[2], deploy),
        (EVENT_TYPES[3], parsed),
        (EVENT_TYPES[4], deploy),
    ]


def measure(url: str) -> dict[str, int]:
    """Round trips of each scenario on a migrated database at `url` (one group's life)."""
    from persistence.db import make_engine
    from persistence.uow import SqlUnitOfWork
    from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent, parse
    from workers.handlers import Deps, handle_catalog_parsed, handle_stage_finished
    from workers.outbox import FollowOns, OutboxRelay

    engine = make_engine(url)
    with engine.connect():
        pass  # the dialect's first-connect queries are not an event's
    clock = lambda: datetime.now(UTC)  # noqa: E731
    deps = Deps(
        new_uow=lambda: SqlUnitOfWork(engine, FollowOns()),
        clock=clock,
        new_id=lambda: str(uuid.uuid4()),
        stage_timeouts=dict.fromkeys(_stage_names(), timedelta(minutes=30)),
    )
    counts: dict[str, int] = {}
    sent: list[str] = []
    try:
        with traced(engine) as take:
            for name, envelope in _scenarios(str(uuid.uuid4()), f"rt-{uuid.uuid4().hex[:8]}"):
                if envelope["event_type"] == "catalog.parsed":
                    command: Any = parse(CatalogParsedEvent, (), {"event": envelope}).to_command()
                    result = handle_catalog_parsed(command, deps=deps)
                else:
                    command = parse(StageFinishedEvent, (), {"event": envelope}).to_command()
                    result = handle_stage_finished(command, deps=deps)
                expected = "duplicate" if name.startswith("duplicate") else "applied"
                if result.outcome.outcome.value != expected:
                    raise RuntimeError(f"{name}: {result.outcome}")
                sent += [m.event_id for m in result.messages]
                counts[name] = take().trips
            OutboxRelay(lambda: SqlUnitOfWork(engine), _NoPublisher(), clock)._mark(sent)
            counts[EVENT_TYPES[5]] = take().trips
    finally:
        engine.dispose()
    return counts


def _stage_names() -> list[Any]:
    from domain import StageName

    return list(StageName)


class _NoPublisher:
    def publish(self, message: Any) -> None:
        raise AssertionError("the bench publishes nothing")


def _measure_fresh() -> dict[str, int]:
    from persistence.migrate import upgrade
    from tests.pg import fresh_database

    with fresh_database("round_trips") as url:
        upgrade(url)
        return measure(url)


@contextmanager
def _exported(rev: str) -> Iterator[Path]:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="round-trips-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rev", help="measure this git revision instead (git archive)")
    p.add_argument("--code", type=Path, default=REPO, help=argparse.SUPPRESS)
    p.add_argument("--label", default="the working tree", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rev:
        with _exported(args.rev) as code:
            here = str(Path(__file__).resolve())
            env = {**os.environ, "PYTHONPATH": str(code)}
            cmd = [sys.executable, here, "--code", str(code), "--label", f"git {args.rev}"]
            return subprocess.run(cmd, cwd=code, env=env, check=False).returncode
    sys.path.insert(0, str(args.code.resolve()))
    counts = _measure_fresh()
    print(f"PostgreSQL round trips per event, {args.label}:")
    for name in EVENT_TYPES:
        print(f"  {name:<26} {counts[name]}")
    return 0


if __name__ == "__main__":
    if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
        del sys.path[0]  # run as a script: bench's modules must not shadow anything
    sys.exit(main(sys.argv[1:]))
