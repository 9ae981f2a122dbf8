"""The profile's layers (bench/layers.py) put a sample where its frames say it belongs."""

from __future__ import annotations

from bench.layers import MAIN


def _layer(frames: list[str]) -> str:
    return next(rule.label for rule in MAIN if rule.matches(frames))


def test_the_event_loop_waiting_in_kombu_s_poll_is_idle_not_kombu_s_python() -> None:
    # py-spy shows no frame for epoll's C call: the innermost is kombu's poll wrapper.
    loop = [
        "start (celery/worker/consumer/consumer.py:332)",
        "asynloop (celery/worker/loops.py:97)",
    ]
    waiting = [*loop, "poll (kombu/utils/eventio.py:83)"]
    working = [*loop, "on_readable (kombu/transport/redis.py:1370)"]
    assert _layer(waiting) == "idle: event loop waiting (epoll)"
    assert _layer(working) == "kombu transport (Python)"
