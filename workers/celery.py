"""The Celery application; `celery -A workers worker` finds it here, as `workers.celery.app`."""

from __future__ import annotations

from celery import Celery

from workers import database_gate, flower_access, monitoring, signals

app = Celery("imagegroups")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
# `celery -A workers flower` imports this module before Flower reads its options.
flower_access.install()
# The worker's lifecycle: fresh connections after fork, the outbox sweep, leases.
signals.connect()
# Stage deadlines and the metrics endpoint, in the worker's main process.
monitoring.connect()
# No events taken while the database does not answer (workers/database_gate.py).
app.steps["consumer"].add(database_gate.DatabaseGate)
