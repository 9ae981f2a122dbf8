"""The remote-control policy as a decision table, the guarded command table, and its setting."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import Celery
from pydantic import ValidationError

from workers.broker.control_policy import (
    READ_ONLY,
    REPLY_EXCHANGE,
    UNKNOWN,
    ControlPolicy,
    GuardedHandlers,
    Mode,
    addressing_problem,
    sender_of,
    unknown_commands,
)
from workers.settings import Settings

#: Every command of Celery 5's remote control that changes the worker or its tasks.
CHANGING = (
    "shutdown", "revoke", "terminate", "revoke_by_stamped_headers", "pool_grow", "pool_shrink",
    "pool_restart", "autoscale", "rate_limit", "time_limit", "add_consumer", "cancel_consumer",
    "disable_events", "heartbeat",
)  # fmt: skip
FLOWER_WORKER_PAGE = (
    "stats", "active_queues", "registered", "scheduled", "active", "reserved", "revoked", "conf",
)  # fmt: skip


def pong(_state: Any, **_: Any) -> dict[str, str]:
    return {"ok": "pong"}


def down(_state: Any, **_: Any) -> None:
    raise AssertionError("a refused command ran")


COMMANDS = {"ping": pong, "shutdown": down, "pool_grow": down, "hello": down, "election": down}


@pytest.mark.parametrize(
    ("mode", "extra", "command", "allowed"),
    [
        *[("read-only", "", name, True) for name in ("ping", "imagegroups_health")],
        *[("read-only", "", name, True) for name in FLOWER_WORKER_PAGE],
        ("read-only", "", "enable_events", True),
        *[("read-only", "", name, False) for name in CHANGING],
        ("read-only", "", "no_such_command", False),
        ("read-only", "pool_grow", "pool_grow", True),
        ("read-only", "pool_grow", "pool_shrink", False),
        *[("full", "", name, True) for name in (*CHANGING, "ping", "stats")],
        # Worker-to-worker sync: its steps are off, so it is refused even in full, or named.
        *[(mode, "", name, False) for mode in ("read-only", "full") for name in ("hello",)],
        ("full", "", "election", False),
        ("read-only", "hello", "hello", False),
    ],
)
def test_the_policy_allows_only_what_its_mode_and_extra_commands_name(
    mode: Mode, extra: str, command: str, allowed: bool
) -> None:
    policy = ControlPolicy(mode=mode, extra=frozenset(filter(None, extra.split(","))))
    assert policy.allows(command) is allowed


def test_read_only_is_the_product_s_commands_and_flower_s_worker_page_and_nothing_changing() -> (
    None
):
    from flower.inspector import Inspector  # type: ignore[import-untyped]

    assert set(Inspector.inspect_methods) <= READ_ONLY
    assert set(CHANGING).isdisjoint(READ_ONLY)


def guarded(policy: ControlPolicy, refused: list[str]) -> GuardedHandlers:
    return GuardedHandlers(COMMANDS, policy, refused.append)


def test_an_allowed_command_is_celery_s_own_handler() -> None:
    refused: list[str] = []
    assert guarded(ControlPolicy(), refused)["ping"] is pong
    assert refused == []


def test_a_refused_command_replies_with_the_reason_and_is_logged_with_its_sender_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused: list[str] = []
    handlers = guarded(ControlPolicy(), refused)
    handlers.sender = "reply-to 'abc'"
    with caplog.at_level(logging.WARNING, logger="workers.broker.control_policy"):
        reply = handlers["shutdown"](None, msg="bye")
    assert reply["error"].startswith("refused: remote-control command 'shutdown'")
    assert "IMAGEGROUPS_REMOTE_CONTROL=read-only" in reply["error"]
    assert refused == ["shutdown"]
    assert "'shutdown'" in caplog.text and "reply-to 'abc'" in caplog.text


def test_an_unknown_or_malformed_command_is_refused_under_one_label() -> None:
    refused: list[str] = []
    handlers = guarded(ControlPolicy(mode="full"), refused)
    assert "error" in handlers["x" * 1000](None)
    assert "error" in handlers[["not", "a", "name"]](None)  # type: ignore[index]
    assert refused == [UNKNOWN, UNKNOWN]


def test_a_command_name_with_control_characters_is_escaped_in_the_reply() -> None:
    reply = guarded(ControlPolicy(), [])["\x1b[2J\nstatus PASSED"](None)
    assert "\x1b" not in reply["error"] and "\n" not in reply["error"]


def test_the_guarded_table_lists_only_allowed_commands_and_knows_the_refused_ones() -> None:
    handlers = guarded(ControlPolicy(), [])
    assert sorted(handlers) == ["ping"] and len(handlers) == 1
    assert "ping" in handlers and "shutdown" not in handlers
    assert handlers.refused_commands() == ["election", "hello", "pool_grow", "shutdown"]
    assert sorted(guarded(ControlPolicy(mode="full"), [])) == ["ping", "pool_grow", "shutdown"]


def test_the_sender_is_the_reply_address_a_message_gives_if_any() -> None:
    assert sender_of({"reply_to": {"routing_key": "abc"}}) == "reply-to 'abc'"
    assert sender_of({"method": "shutdown"}).startswith("unknown")
    assert sender_of(["not", "a", "body"]).startswith("unknown")


def test_extra_commands_that_the_worker_does_not_have_are_named() -> None:
    assert unknown_commands(frozenset({"ping", "pool_grow", "nope", "hello"}), COMMANDS) == [
        "hello",
        "nope",
    ]


def test_remote_control_is_read_only_unless_an_operator_opts_in() -> None:
    assert Settings.model_validate({}).remote_control == "read-only"
    full = Settings.model_validate({"IMAGEGROUPS_REMOTE_CONTROL": "full"})
    assert full.remote_control == "full"


def test_an_unknown_remote_control_mode_is_refused_with_the_setting_s_name() -> None:
    with pytest.raises(ValidationError, match=r"IMAGEGROUPS_REMOTE_CONTROL\n.*'read-only' or"):
        Settings.model_validate({"IMAGEGROUPS_REMOTE_CONTROL": "all"})


def test_extra_allowed_commands_are_a_comma_list_of_command_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEGROUPS_REMOTE_CONTROL_ALLOW", " pool_grow, pool_shrink ,")
    assert Settings().remote_control_allow == {"pool_grow", "pool_shrink"}
    monkeypatch.setenv("IMAGEGROUPS_REMOTE_CONTROL_ALLOW", "")
    assert Settings().remote_control_allow == frozenset()


@pytest.mark.parametrize("value", ["pool grow", "Shutdown", "rm -rf", "x" * 65])
def test_a_malformed_extra_command_name_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="IMAGEGROUPS_REMOTE_CONTROL_ALLOW"):
        Settings.model_validate({"IMAGEGROUPS_REMOTE_CONTROL_ALLOW": value})


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ({"method": "ping", "destination": None}, False),
        ({"method": "ping", "pattern": "celery@*", "matcher": "glob"}, False),
        (
            {"method": "ping", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"}},
            False,
        ),
        ({"method": "ping", "pattern": "(?:.?){60}!", "matcher": "pcre"}, True),
        ({"method": "ping", "pattern": "x" * 257, "matcher": "glob"}, True),
        ({"method": "ping", "pattern": "celery@*"}, True),
        ({"method": "ping", "matcher": "glob"}, True),
        (
            {"method": "ping", "reply_to": {"exchange": "", "routing_key": "imagegroups.events"}},
            True,
        ),
        ({"method": "ping", "reply_to": "imagegroups.events"}, True),
        (
            {"method": "ping", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": 7}},
            True,
        ),
    ],
)
def test_a_message_is_refused_for_its_addressing_before_kombu_matches_it(
    body: dict[str, object], refused: bool
) -> None:
    assert (addressing_problem(body) is not None) is refused


def test_celery_s_replies_go_to_the_one_exchange_the_addressing_check_lets_through() -> None:
    app = Celery("addressing", broker="memory://")
    assert app.control.mailbox.reply_exchange.name == REPLY_EXCHANGE
