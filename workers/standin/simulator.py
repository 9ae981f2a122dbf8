"""The stand-in pipeline: answers deploy, PXE-boot and validate requests with stage results."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from domain import StageName
from workers.edge.accept import (
    DeployRequestedEvent,
    EnvelopeBase,
    PxeBootRequestedEvent,
    ValidateRequestedEvent,
)
from workers.messages import FOLLOW_ON, PIPELINE_QUEUES
from workers.outbox import send, stage_finished

log = logging.getLogger(__name__)

_STAGES: dict[str, tuple[str, type[EnvelopeBase]]] = {
    FOLLOW_ON[StageName.DEPLOY].task: (StageName.DEPLOY.value, DeployRequestedEvent),
    FOLLOW_ON[StageName.PXE_BOOT].task: (StageName.PXE_BOOT.value, PxeBootRequestedEvent),
    FOLLOW_ON[StageName.VALIDATE].task: (StageName.VALIDATE.value, ValidateRequestedEvent),
}


@dataclass(frozen=True, slots=True)
class Request:
    """One stage request as the stand-in sees it."""

    event_id: str
    image_group_id: str
    attempt: int
    stage: str


@dataclass
class Behaviour:
    """How the stand-in answers; deterministic per request for a given seed."""

    fail_rate: float = 0.0
    delay: float = 0.0
    seed: int = 0

    def fails(self, request: Request) -> bool:
        draw = random.Random(f"{self.seed}:{request.event_id}:{request.stage}").random()
        return draw < self.fail_rate

    def why(self, request: Request) -> str:
        """The error summary of a failure this behaviour chose."""
        return f"the stand-in failed {request.stage} at random (fail rate {self.fail_rate:g})"


@dataclass
class StandIn:
    """The stand-in pipeline: its tasks answer each request as `behaviour` says."""

    behaviour: Behaviour = field(default_factory=Behaviour)

    def register(self, app: Celery, **options: Any) -> None:
        """Register the three pipeline tasks on `app` (its own app, or the demo's), with
        `options` on top of the task options every one has."""
        for task_name in _STAGES:

            def run(event: dict[str, Any], _name: str = task_name) -> dict[str, Any]:
                return self.answer(_name, event, reply_app=app)

            app.task(name=task_name, acks_late=True, reject_on_worker_lost=True, **options)(run)

    def answer(self, task_name: str, event: dict[str, Any], *, reply_app: Any) -> dict[str, Any]:
        """Validate one request and send the matching stage.finished (attempt and id echoed)."""
        stage, model = _STAGES[task_name]
        parsed: Any = model.model_validate(event)  # every request has image_group_id, attempt
        if self.behaviour.delay:
            time.sleep(random.uniform(0.5, 1.5) * self.behaviour.delay)
        event_id, job_id = parsed.ids()
        group_id, attempt = parsed.payload.image_group_id, parsed.payload.attempt
        request = Request(event_id, group_id, attempt, stage)
        failed = self.behaviour.fails(request)
        outcome = "failed" if failed else "succeeded"
        reply = stage_finished(
            job_id,
            stage,
            outcome,
            image_group_id=group_id,
            attempt=attempt,
            request_event_id=event_id,
            error_code="SIMULATED_FAILURE" if failed else None,
            error_summary=self.behaviour.why(request) if failed else None,
            detail={"simulated": True, "stage": stage},
            correlation_id=None if parsed.correlation_id is None else str(parsed.correlation_id),
            causation_id=event_id,
        )
        send(reply_app, reply)
        log.info(
            "simulated %s event_id=%s image_group_id=%s attempt=%s -> %s",
            stage, event_id, group_id, attempt, outcome,
        )  # fmt: skip
        return {"stage": stage, "outcome": outcome, "reply": reply["event_id"]}


def make_app(behaviour: Behaviour | None = None) -> Celery:
    sim = Celery("imagegroups-simulator")
    sim.config_from_object("celeryconfig")
    sim.conf.worker_consumer = "celery.worker.consumer:Consumer"
    StandIn(behaviour or Behaviour()).register(sim)
    return sim


def run_worker(*, fail_rate: float, delay: float, seed: int, concurrency: int = 8) -> None:
    sim = make_app(Behaviour(fail_rate, delay, seed))
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
