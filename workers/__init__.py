"""The worker: Celery app and tasks, handlers, outbox relay, CLI; the stand-ins in standin/.

`celery -A workers worker` finds the app in `workers.celery` (Celery looks there when the
package has no `app` of its own), so importing any other module (the settings, say) loads
only what that module needs, never the Celery app, its tasks or its signals.
"""

from __future__ import annotations

__all__: list[str] = []
