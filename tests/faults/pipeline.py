"""A stand-in pipeline for fault tests: answers each request, several times if asked to.

It reads the three pipeline queues straight off Redis (BRPOP of kombu's envelopes) and
publishes its `stage.finished` answers as raw messages, so it keeps working through the
faults the tests inject into the worker, and it records every request it saw.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis

from tests.faults.messages import envelope, push, task_body, task_headers
from workers import outbox

STAGE_OF = {
    "pipeline.deploy": "deploy",
    "pipeline.pxe_boot": "pxe-boot",
    "pipeline.validate": "validate",
}
STAGE_FINISHED = "imagegroups.stage_finished"
#: (image_group_id, stage, attempt) -> fails?
FailurePlan = Callable[[str, str, int], bool]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Pipeline(threading.Thread):
    def __init__(
        self,
        redis_url: str,
        *,
        copies: tuple[int, int] = (1, 1),
        fails: FailurePlan = lambda group, stage, attempt: False,
        seed: int = 0,
    ) -> None:
        super().__init__(name="stand-in-pipeline", daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.copies = copies
        self.fails = fails
        self.random = random.Random(seed)
        #: (group, stage, attempt) -> the distinct request event_ids seen for it.
        self.requests: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        self.errors: list[str] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                item = self.client.brpop(list(STAGE_OF), timeout=1)
            except redis.RedisError:
                self._halt.wait(0.2)  # the broker is down: wait for it like a real client
                continue
            if item is not None:
                queue, raw = item
                self._answer(_text(queue), raw if isinstance(raw, bytes) else raw.encode())

    def _answer(self, queue: str, raw: bytes) -> None:
        try:
            request = json.loads(base64.b64decode(json.loads(raw)["body"]))[1]["event"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.errors.append(f"unreadable request on {queue}: {exc}")
            return
        stage, payload = STAGE_OF[queue], request["payload"]
        group, attempt = payload["image_group_id"], payload["attempt"]
        self.requests[(group, stage, attempt)].add(request["event_id"])
        failed = self.fails(group, stage, attempt)
        answer = outbox.stage_finished(
            request["job_id"],
            stage,
            "failed" if failed else "succeeded",
            image_group_id=group,
            attempt=attempt,
            request_event_id=request["event_id"],
            error_code="PLANNED_FAILURE" if failed else None,
        )
        message = envelope(task_body(answer), task_headers(STAGE_FINISHED, answer["event_id"]))
        for _ in range(self.random.randint(*self.copies)):
            self._publish(message)

    def _publish(self, message: dict[str, Any]) -> None:
        while not self._halt.is_set():
            try:
                push(self.client, message)
                return
            except redis.RedisError:
                self._halt.wait(0.2)
