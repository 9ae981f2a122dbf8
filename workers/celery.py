"""The Celery application; `celery -A workers worker` finds it here, as `workers.celery.app`."""

from __future__ import annotations

from celery import Celery

from workers.edge import task as event_task
from workers.runtime import flower_access, lifecycle

app = Celery("imagegroups")
app.config_from_object("celeryconfig")
# The event tasks (workers/edge/task.py).
app.autodiscover_tasks(["workers.edge"], related_name="task", force=True)
# `celery -A workers flower` imports this module before Flower reads its options.
flower_access.install()
# The worker's lifecycle (workers/runtime/lifecycle.py): the composition root handed this
# app's publisher, fresh connections after fork, the sweeps and the metrics endpoint.
lifecycle.connect(app)
# No events taken while the database does not answer (workers/edge/task.py).
app.steps["consumer"].add(event_task.DatabaseGate)
