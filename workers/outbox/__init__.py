"""The way out: follow-on events written in the transition's transaction, published after it.

follow_ons.py builds a follow-on from the StageRequested a group recorded (the unit of work
stores it at commit), envelopes.py the contract's envelope for it and for the incoming events
a publisher sends, relay.py publishes committed follow-ons after the commit and sweeps up
any left unsent, through celery_publisher.py.

Importing the package loads nothing.
"""

from __future__ import annotations

__all__: list[str] = []
