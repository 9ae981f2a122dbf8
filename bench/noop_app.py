"""Bare Celery baseline for the benchmark: one no-op task, Celery's defaults, JSON only."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench-noop", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14"))
app.conf.update(accept_content=["json"], task_serializer="json", task_default_queue="noop")


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(event: object = None) -> None:
    return None
