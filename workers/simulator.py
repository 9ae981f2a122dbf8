"""The stand-in pipeline: answers deploy, PXE-boot and validate requests with stage results."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from domain import StageName
from workers.messages import FOLLOW_ON, PIPELINE_QUEUES
from workers.publishing import send, stage_finished
from workers.schemas import (
    DeployRequestedEvent,
    EnvelopeBase,
    PxeBootRequestedEvent,
    ValidateRequestedEvent,
)

log = logging.getLogger(__name__)

_STAGES: dict[str, tuple[str, type[EnvelopeBase]]] = {
    FOLLOW_ON[StageName.DEPLOY].task: (StageName.DEPLOY.value, DeployRequestedEvent),
    FOLLOW_ON[StageName.PXE_BOOT].task: (StageName.PXE_BOOT.value, PxeBootRequestedEvent),
    FOLLOW_ON[StageName.VALIDATE].task: (StageName.VALIDATE.value, ValidateRequestedEvent),
}


@dataclass
class Behaviour:
    """How the stand-in answers; deterministic per request for a given seed."""

    fail_rate: float = 0.0
    delay: float = 0.0
    seed: int = 0

    def fails(self, request_event_id: str, stage: str) -> bool:
        return random.Random(f"{self.seed}:{request_event_id}:{stage}").random() < self.fail_rate


behaviour = Behaviour()


def answer(task_name: str, event: dict[str, Any], *, reply_app: Any) -> dict[str, Any]:
    """Validate one request and send the matching stage.finished (attempt and id echoed)."""
    stage, model = _STAGES[task_name]
    request: Any = model.model_validate(event)  # every request has image_group_id, attempt
    if behaviour.delay:
        time.sleep(random.uniform(0.5, 1.5) * behaviour.delay)
    event_id, job_id = request.ids()
    payload = request.payload
    failed = behaviour.fails(event_id, stage)
    reply = stage_finished(
        job_id,
        stage,
        "failed" if failed else "succeeded",
        image_group_id=payload.image_group_id,
        attempt=payload.attempt,
        request_event_id=event_id,
        error_code="SIMULATED_FAILURE" if failed else None,
        detail={"simulated": True, "stage": stage},
        correlation_id=None if request.correlation_id is None else str(request.correlation_id),
        causation_id=event_id,
    )
    send(reply_app, reply)
    log.info(
        "simulated %s event_id=%s image_group_id=%s attempt=%s -> %s",
        stage,
        event_id,
        payload.image_group_id,
        payload.attempt,
        "failed" if failed else "succeeded",
    )
    return {
        "stage": stage,
        "outcome": "failed" if failed else "succeeded",
        "reply": reply["event_id"],
    }


def register(app: Celery) -> None:
    """Register the three pipeline tasks on `app` (its own app, or the demo's)."""
    for task_name in _STAGES:

        def run(event: dict[str, Any], _name: str = task_name) -> dict[str, Any]:
            return answer(_name, event, reply_app=app)

        app.task(name=task_name, acks_late=True, reject_on_worker_lost=True)(run)


def make_app() -> Celery:
    sim = Celery("imagegroups-simulator")
    sim.config_from_object("celeryconfig")
    sim.conf.worker_consumer = "celery.worker.consumer:Consumer"
    register(sim)
    return sim


def run_worker(*, fail_rate: float, delay: float, seed: int, concurrency: int = 8) -> None:
    behaviour.fail_rate, behaviour.delay, behaviour.seed = fail_rate, delay, seed
    sim = make_app()
    sim.worker_main(
        [
            "worker",
            "-Q",
            ",".join(PIPELINE_QUEUES),
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "-n",
            "simulator@%h",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
    )
