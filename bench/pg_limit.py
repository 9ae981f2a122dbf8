"""PostgreSQL's limit for the worker's own transaction, on this machine: no Celery, no Redis.

The statements the worker's handlers send for one catalog.parsed and one build result are
captured from the checkout under test (bench/pg_capture.py, the one bench module that imports
the product), then replayed by client processes through libpq (psycopg 3): each event one
transaction, all its statements and its COMMIT in one pipeline, prepared. Every UUID and the
group id are replaced per event, consistently, so each replay inserts new rows (no ON CONFLICT
no-ops); n catalog events go first, then the n build results that need their rows, each phase
timed from the moment every client starts to the last commit. Not replayed: the worker's
`sent` marks on outbox rows, one UPDATE per batch of follow-ons after their commits.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Json, Jsonb
from sqlalchemy.engine import make_url

from bench import events
from bench.drain import Drain, database_name
from bench.meter import Meter
from bench.stack import REPO, Stack

CAPTURE_GROUP = "pg-limit-capture-group"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INSERT_RE = re.compile(r"^\s*INSERT INTO (\w+)", re.IGNORECASE)
PHASES = ("catalog", "build")
TIMEOUT = 600.0
#: A statement as captured: its SQL and its parameters as tagged JSON text (bench/pg_capture.py).
Statement = tuple[str, str]


@dataclass(frozen=True)
class Captured:
    catalog: list[Statement]
    build: list[Statement]

    def tokens(self) -> list[str]:
        """What is replaced per event: every UUID in the parameters, and the group id."""
        found = {m for _sql, params in self.catalog + self.build for m in UUID_RE.findall(params)}
        return [CAPTURE_GROUP, *sorted(found)]


def capture(stack: Stack) -> Captured:
    """Run the worker's handlers once per event type on a fresh database, recording SQL."""
    group = events.Group(str(uuid.uuid4()), CAPTURE_GROUP)
    sample = [events.catalog_parsed(group), events.stage_finished(group, "build-image")]
    with stack.database() as url, tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        source, target = Path(tmp) / "events.json", Path(tmp) / "statements.json"
        source.write_text(json.dumps(sample))
        script = REPO / "bench" / "pg_capture.py"
        done = subprocess.run(
            [sys.executable, str(script), str(source), str(target)],
            cwd=stack.code,
            env=stack.env(url),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"capturing the worker's statements failed:\n{done.stderr[-3000:]}")
        catalog, build = json.loads(target.read_text())
    return Captured(_as_text(catalog), _as_text(build))


def _as_text(found: list[dict[str, Any]]) -> list[Statement]:
    return [(s["sql"], json.dumps(s["params"])) for s in found]


def untag(value: Any) -> Any:
    """Tagged JSON back to the values psycopg was handed."""
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    makers: dict[str, Any] = {
        "$uuid": uuid.UUID,
        "$datetime": datetime.fromisoformat,
        "$date": date.fromisoformat,
        "$decimal": Decimal,
        "$jsonb": Jsonb,
        "$json": Json,
        "$list": lambda v: [untag(x) for x in v],
        "$dict": lambda v: {k: untag(x) for k, x in v.items()},
    }
    return makers[tag](inner)


class Binder:
    """The captured statements with one event's fresh values: the same ones for event i in
    both phases (its catalog row is what its build result locks)."""

    def __init__(self, captured: Captured, nonce: str) -> None:
        self.tokens = captured.tokens()
        self.pattern = re.compile("|".join(re.escape(t) for t in self.tokens))
        self.space = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-pg-limit-{nonce}")
        self.nonce = nonce

    def values(self, i: int) -> dict[str, str]:
        subs = {t: str(uuid.uuid5(self.space, f"{i}/{t}")) for t in self.tokens[1:]}
        subs[CAPTURE_GROUP] = f"pg-limit-{self.nonce}-{i}"
        return subs

    def bind(self, template: list[Statement], i: int) -> list[tuple[str, Any]]:
        subs = self.values(i)
        swap = lambda m: subs[m.group(0)]  # noqa: E731
        return [(sql, untag(json.loads(self.pattern.sub(swap, p)))) for sql, p in template]


@dataclass(frozen=True)
class _Job:
    conninfo: str
    captured: Captured
    nonce: str
    indices: list[int]


def _replay(job: _Job, barrier: Any, results: Any) -> None:
    """One client process: bind every event first, then replay each phase when all are set."""
    try:
        binder = Binder(job.captured, job.nonce)
        phases = [
            [binder.bind(getattr(job.captured, phase), i) for i in job.indices] for phase in PHASES
        ]
        with psycopg.connect(job.conninfo) as conn:
            cursor = conn.cursor()
            for phase, work in zip(PHASES, phases, strict=True):
                barrier.wait(TIMEOUT)
                start = time.monotonic()
                for statements in work:
                    with conn.pipeline():
                        for sql, params in statements:
                            cursor.execute(sql, params, prepare=True)
                        conn.commit()
                results.put((phase, start, time.monotonic()))
            barrier.wait(TIMEOUT)  # still connected while the parent reads the CPU used
    except BaseException:
        results.put(("error", traceback.format_exc(), 0.0))
        barrier.abort()


@dataclass
class PgLimit:
    catalog: Drain
    build: Drain
    statements: dict[str, int]  # per event, by phase


def pg_limit(stack: Stack, n: int, processes: int, captured: Captured) -> PgLimit:
    """Replay `n` catalog events then `n` build results from `processes` clients."""
    with stack.database() as url:
        before = row_counts(url, captured)
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        nonce = uuid.uuid4().hex[:8]
        # Spawned, not forked: a fork would inherit the bench's Celery client and its hooks.
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
        shares = [list(range(k, n, processes)) for k in range(processes)]
        jobs = [_Job(conninfo, captured, nonce, share) for share in shares]
        clients = [ctx.Process(target=_replay, args=(j, barrier, results)) for j in jobs]
        for client in clients:
            client.start()
        try:
            pids = lambda: [c.pid for c in clients if c.pid is not None]  # noqa: E731
            catalog, build = (_phase(stack, p, n, pids, url, barrier, results) for p in PHASES)
            barrier.wait(TIMEOUT)
        finally:
            barrier.abort()  # a client still waiting (after a failure) ends now
            for client in clients:
                client.join(30)
                if client.is_alive():
                    client.kill()
        found = PgLimit(catalog, build, {p: len(getattr(captured, p)) for p in PHASES})
        check(found, url, n, captured, before)
    return found


def _phase(
    stack: Stack, phase: str, n: int, pids: Any, url: str, barrier: Any, results: Any
) -> Drain:
    stack.calm()
    meter = Meter(pids, stack.redis, database_name(url))
    _wait(barrier, results)
    meter.start()
    spans = [results.get(timeout=TIMEOUT) for _ in range(barrier.parties - 1)]
    cpu = meter.stop()
    for kind, text, _end in spans:
        if kind == "error":
            raise RuntimeError(f"pg-limit replay failed:\n{text}")
    seconds = max(s[2] for s in spans) - min(s[1] for s in spans)
    label = "catalog.parsed" if phase == "catalog" else "build-image succeeded"
    return Drain(f"pg-limit {label}", n, seconds, cpu)


def _wait(barrier: Any, results: Any) -> None:
    try:
        barrier.wait(TIMEOUT)
    except Exception:
        _kind, text, _ = results.get(timeout=10)
        raise RuntimeError(f"pg-limit replay failed before it started:\n{text}") from None


def inserts(captured: Captured) -> tuple[Counter[str], set[str]]:
    """Rows each event inserts per table, and the tables it upserts (rows may coincide)."""
    rows: Counter[str] = Counter()
    upserted: set[str] = set()
    for sql, _params in captured.catalog + captured.build:
        table = INSERT_RE.match(sql)
        if table:
            rows[table.group(1)] += 1
            if "DO UPDATE" in sql.upper():
                upserted.add(table.group(1))
    return rows, upserted


def row_counts(url: str, captured: Captured) -> dict[str, int]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
    tables = sorted(inserts(captured)[0])
    with psycopg.connect(conninfo) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tables}
        deploying = conn.execute("SELECT count(*) FROM image_groups WHERE status = 'DEPLOYING'")
        counts["DEPLOYING"] = deploying.fetchone()
    return {t: int(row[0]) if row else 0 for t, row in counts.items()}


def check(found: PgLimit, url: str, n: int, captured: Captured, before: dict[str, int]) -> None:
    """Every replayed event inserted its rows (an ON CONFLICT no-op would look fast)."""
    rows, upserted = inserts(captured)
    after = row_counts(url, captured)
    added = {t: after[t] - before.get(t, 0) for t in after}
    wrong = [
        f"{t} {added[t]} (expected {'at least ' if t in upserted else ''}{n}x{k})"
        for t, k in sorted(rows.items())
        if (added[t] < n if t in upserted else added[t] != n * k)
    ]
    if added["DEPLOYING"] != n:
        wrong.append(f"groups DEPLOYING {added['DEPLOYING']}/{n}")
    if wrong:
        raise RuntimeError(f"the replay did not insert every row: {', '.join(wrong)}")
    total = sum(added[t] for t in rows)
    found.catalog.check = f"{found.statements['catalog']} statements/event, replayed {n}/{n}"
    found.build.check = (
        f"{found.statements['build']} statements/event; {total} rows in {len(rows)} tables as "
        f"expected, DEPLOYING {added['DEPLOYING']}/{n}"
    )
