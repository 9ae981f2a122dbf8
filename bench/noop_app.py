"""Bare Celery baseline for the benchmark: one no-op task, Celery's defaults plus acks_late.

`BENCH_NOOP_OBSERVED=1` adds what Flower-style observability costs: task events (sent and
worker events), a Redis result backend (`CELERY_RESULT_BACKEND`, else the broker's database)
and `result_extended`, so each result is stored with its arguments.

`BENCH_NOOP_OBSERVED=events` is the ceiling for an event worker that Flower watches: task
events (sent and worker events) as the worker sends them, and results under the worker's own
rule, stored (the outcome alone) only when `CELERY_RESULT_BACKEND` is set.

`BENCH_NOOP_COMMIT=<database URL>` makes each task one durable transaction too: a single-row
INSERT into `bench_commits`, prepared, on the pool process's own autocommit connection, so one
round trip and one WAL flush per task. With the task events on, that is the ceiling for a
Celery worker that Flower watches and that commits once per event: no handler, no lock, no
inbox or outbox, nothing but what every such worker pays.
"""

from __future__ import annotations

import os

import psycopg
from celery import Celery

broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
app = Celery("bench-noop", broker=broker)
app.conf.update(
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    task_default_queue="noop",
    task_acks_late=True,
)
observed = os.environ.get("BENCH_NOOP_OBSERVED")
if observed == "1":
    app.conf.update(
        result_backend=os.environ.get("CELERY_RESULT_BACKEND") or broker,
        result_extended=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
elif observed == "events":
    backend = os.environ.get("CELERY_RESULT_BACKEND") or None
    app.conf.update(
        result_backend=backend,
        task_ignore_result=backend is None,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )


#: bench_commits's DDL, created by the bench before the worker starts.
COMMITS_TABLE = "CREATE TABLE bench_commits (id bigserial PRIMARY KEY, task_id text NOT NULL)"
_COMMIT_URL = os.environ.get("BENCH_NOOP_COMMIT", "").replace(
    "postgresql+psycopg://", "postgresql://"
)
_conn: list[psycopg.Connection[tuple[object, ...]]] = []  # the pool process's, made on first use


def _commit(task_id: str) -> None:
    if not _conn:
        _conn.append(psycopg.connect(_COMMIT_URL, autocommit=True))
    _conn[0].execute("INSERT INTO bench_commits (task_id) VALUES (%s)", (task_id,), prepare=True)


@app.task(name="bench.noop", bind=True)  # type: ignore[untyped-decorator]
def noop(self: object, event: object = None) -> None:
    if _COMMIT_URL:
        _commit(self.request.id)  # type: ignore[attr-defined]
    return None
