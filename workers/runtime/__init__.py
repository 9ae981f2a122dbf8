"""What a worker process is wired with and how it lives: the composition root and the state a
process keeps, its health and its counting among it (root.py), the one lifecycle wiring on
Celery's signals (lifecycle.py), the periodic threads (periodic.py, housekeeping.py), the
/metrics endpoint (metrics_http.py), and Flower's access rules (flower_access.py)."""

from __future__ import annotations

__all__: list[str] = []
