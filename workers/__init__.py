"""Celery side of the worker: app, tasks, handlers, relay, CLI, simulator and demo."""

from __future__ import annotations

from workers import signals as _signals
from workers.celery_app import app

__all__ = ["app"]
del _signals
