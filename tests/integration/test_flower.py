"""Flower, run as docker-compose runs it, shows our tasks with their arguments and results."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.flow import new_job, start_group, wait_status
from tests.integration.stack import FLOWER_COMMAND, stack, wait_for

pytestmark = pytest.mark.integration

AUTH = "ops:s3cret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, auth: str | None = AUTH) -> Any:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _tasks(base: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = _get(f"{base}/api/tasks")
    except (urllib.error.URLError, ConnectionError):
        return {}
    return found


def test_flower_shows_each_event_task_with_its_outcome_behind_basic_auth(tmp_path: Path) -> None:
    with stack(tmp_path, "flower") as s:
        port = _free_port()
        flower = s.spawn(
            FLOWER_COMMAND,
            "flower",
            FLOWER_PORT=str(port),
            FLOWER_BASIC_AUTH=AUTH,
            FLOWER_ADDRESS="127.0.0.1",
        )
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: "Visit me at" in flower.output(), timeout=30, what="flower to listen")
        s.start_worker()
        start_group(s, "flower-1", new_job())
        wait_status(s, "flower-1", "DEPLOYING")

        def finished() -> list[dict[str, Any]]:
            return [
                t
                for t in _tasks(base).values()
                if t.get("name") == "imagegroups.stage_finished" and t.get("state") == "SUCCESS"
            ]

        [task] = wait_for(finished, timeout=30, what="flower to show the build result task")
        assert "'outcome': 'applied'" in task["result"]
        assert "'status': 'DEPLOYING'" in task["result"]
        assert "build-image" in task["kwargs"]

        def requested() -> list[tuple[str, dict[str, Any]]]:
            return [(k, t) for k, t in _tasks(base).items() if t.get("name") == "pipeline.deploy"]

        # The follow-on the worker published, known to Flower by its sent event alone.
        [(task_id, deploy)] = wait_for(requested, timeout=30, what="flower to show the follow-on")
        assert f"'event_id': '{task_id}'" in deploy["kwargs"]
        assert "'image_name': " in deploy["kwargs"]  # the whole body, images included
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/api/tasks", auth=None)
        assert refused.value.code == 401
