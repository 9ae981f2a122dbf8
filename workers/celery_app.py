"""The Celery application; `celery -A workers worker` finds it as `workers.app`."""

from __future__ import annotations

from celery import Celery

app = Celery("imagegroups")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
