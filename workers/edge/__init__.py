"""The message edge: accept a message (check it once, into a command, or refuse it with a
reason), decide what becomes of each delivery (a pure policy), and the Celery task and
consumer that only translate that decision, with the request Celery makes of each message
and the database gate (task.py); the dead-letter store's service side.

Importing the package loads nothing: the settings read the retry schedule from `decide`.
"""

from __future__ import annotations

__all__: list[str] = []
