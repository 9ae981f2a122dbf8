"""The message vocabulary of docs/contract.md §2, in one place: task names, queues, types.

Everything else (Celery's routes, the publishers, the follow-on builder, the simulator, the
schemas) takes its names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from domain import StageName

SCHEMA_VERSION = 1
EVENTS_QUEUE = "imagegroups.events"
#: The header the Redis transport sets on the stand-in for a queue entry kombu cannot read;
#: its value says what was wrong with the entry (workers/broker/transport.py).
MALFORMED_HEADER = "imagegroups_malformed_envelope"


@dataclass(frozen=True, slots=True)
class Message:
    """A Celery task of the contract: its name, the queue it goes to, its `event_type`."""

    task: str
    queue: str
    event_type: str


CATALOG_PARSED = Message("imagegroups.catalog_parsed", EVENTS_QUEUE, "catalog.parsed")
STAGE_FINISHED = Message("imagegroups.stage_finished", EVENTS_QUEUE, "stage.finished")
INCOMING: tuple[Message, ...] = (CATALOG_PARSED, STAGE_FINISHED)

#: The request the worker sends when a group enters the stage's running status.
FOLLOW_ON: Mapping[StageName, Message] = MappingProxyType(
    {
        StageName.DEPLOY: Message("pipeline.deploy", "pipeline.deploy", "deploy.requested"),
        StageName.PXE_BOOT: Message("pipeline.pxe_boot", "pipeline.pxe_boot", "pxe_boot.requested"),
        StageName.VALIDATE: Message("pipeline.validate", "pipeline.validate", "validate.requested"),
    }
)
PIPELINE_QUEUES: tuple[str, ...] = tuple(m.queue for m in FOLLOW_ON.values())

#: Incoming event type -> its task name (what a publisher sends it as).
TASK_FOR_TYPE: Mapping[str, str] = MappingProxyType({m.event_type: m.task for m in INCOMING})


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's `task_routes`: every task of the contract to its queue."""
    return {m.task: {"queue": m.queue} for m in (*INCOMING, *FOLLOW_ON.values())}
