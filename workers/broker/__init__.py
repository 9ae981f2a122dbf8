"""What plugs into kombu's and Celery's broker-facing machinery, each hook with its canary.

The Redis transport (screening, leases), the consumer's remote-control step and its policy.
(The event task's request and the database gate are the edge's: workers/edge/task.py.)
Each hooks a library's private code: docs/architecture.md lists every hook with the canary
test that fails when the installed kombu or Celery stops calling it, and `engaged.py`
refuses to start a worker whose screening or leases are not in place.
"""

from __future__ import annotations

__all__: list[str] = []
