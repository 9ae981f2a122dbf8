"""Bare Celery baseline for the benchmark: one no-op task, Celery's defaults plus acks_late.

`BENCH_NOOP_OBSERVED=1` adds what Flower-style observability costs: task events (sent and
worker events), a Redis result backend (`CELERY_RESULT_BACKEND`, else the broker's database)
and `result_extended`, so each result is stored with its arguments.

`BENCH_NOOP_OBSERVED=events` is the ceiling for an event worker that Flower watches: task
events (sent and worker events) as the worker sends them, and results under the worker's own
rule, stored (the outcome alone) only when `CELERY_RESULT_BACKEND` is set.
"""

from __future__ import annotations

import os

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


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(event: object = None) -> None:
    return None
