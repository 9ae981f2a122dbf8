"""The `imagegroups` parser: usage errors exit 2, and `publish` validates before it sends."""

from __future__ import annotations

import json
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

from workers.cli import publish_commands
from workers.cli.main import main
from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent

FIXTURES = Path(__file__).parents[1] / "fixtures" / "catalogs"
JOB = "0b7f3c2e-4f57-4a43-9d7e-5b2a1c0d9e11"
FINISHED = ["publish", "stage-finished", "--job-id", JOB]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event `publish` would send; nothing reaches a broker."""
    events: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> str:
        events.append(event)
        return str(event["event_id"])

    monkeypatch.setattr(publish_commands, "_send", record)
    return events


# Usage errors: exit status 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["db"],
        ["db", "downgrade"],
        ["list", "--status", "BOGUS"],
        ["list", "--limit", "0"],
        ["list", "--limit", "many"],
        ["list", "--offset", "-1"],
        ["status"],
        ["history"],
        ["request", "build", "g1"],
        ["request", "deploy"],
        ["cleanup"],
        ["publish"],
        ["publish", "catalog-parsed", "--catalog", "c.json"],
        ["publish", "catalog-parsed", "--job-id", JOB],
        ["publish", "catalog-parsed", "--job-id", JOB, "--catalog", "c", "--image-group-id", "g"],
        ["publish", "catalog-parsed", "--job-id", JOB, "--image-group-id", "g"],
        ["publish", "catalog-parsed", "--job-id", JOB, "--catalog", "c.json", "--role", "a"],
        [*FINISHED, "--outcome", "failed"],
        [*FINISHED, "--stage", "deploy"],
        [*FINISHED, "--stage", "deploy", "--outcome", "ok"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--attempt", "0"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--attempt", "two"],
        [*FINISHED, "--stage", "bogus", "--outcome", "failed"],
        [*FINISHED, "--stage", "Deploy", "--outcome", "failed"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--request-event-id", "x"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--correlation-id", "x"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--detail", "{nope"],
        [*FINISHED, "--stage", "deploy", "--outcome", "failed", "--detail", "[1]"],
        ["publish", "stage-finished", "--job-id", "not-a-uuid", "--stage", "deploy"],
        ["publish", "catalog-parsed", "--job-id", "not-a-uuid", "--image-group-id", "g"],
        ["publish", "catalog-parsed", "--job-id", JOB, "--catalog", "c", "--correlation-id", "1"],
        ["dead-letters"],
        ["dead-letters", "show"],
        ["dead-letters", "show", "abc"],
        ["dead-letters", "replay"],
        ["dead-letters", "replay", "1", "--all"],
        ["dead-letters", "discard"],
        ["simulate", "--fail-rate", "1.5"],
        ["simulate", "--fail-rate", "-0.1"],
        ["simulate", "--fail-rate", "nan"],
        ["simulate", "--delay", "-1"],
        ["simulate", "--delay", "inf"],
        ["simulate", "--seed", "x"],
        ["simulate", "--concurrency", "0"],
        ["db", "downgrade", "1", "2"],
        ["db", "sideways"],
        ["demo", "--groups", "0"],
    ],
    ids=lambda argv: " ".join(argv) or "no-command",
)
def test_a_usage_error_exits_2_with_usage_on_stderr(
    argv: list[str], sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2

    out, err = capsys.readouterr()
    assert "usage: imagegroups" in err
    assert out == ""
    assert sent == []


def test_status_names_are_accepted_in_any_case() -> None:
    from workers.cli.main import build_parser

    args = build_parser().parse_args(["list", "--status", "failed"])

    assert (args.status, args.limit, args.offset, args.json) == ("FAILED", 50, 0, False)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "dead-letters" in capsys.readouterr().out


# publish: validated here, sent only when valid --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--job-id", JOB, "--image-group-id", " g1", "--role", "a"], "image_group_id"),
        (["--job-id", JOB, "--image-group-id", "g" * 129, "--role", "a"], "image_group_id"),
        (["--job-id", JOB, "--image-group-id", "", "--role", "a"], "image_group_id"),
        (["--job-id", JOB, "--image-group-id", "g1", "--role", "a", "--role", "a"], "unique"),
        (["--job-id", JOB, "--image-group-id", "g1", "--role", ""], "roles"),
        (["--job-id", JOB, "--image-group-id", "g1", "--role", "a="], "role_images"),
        (["--job-id", JOB, "--catalog", "/nonexistent/catalog.json"], "not found"),
    ],
    ids=[
        "untrimmed-group-id",
        "long-group-id",
        "empty-group-id",
        "repeated-role",
        "empty-role",
        "empty-image",
        "missing-catalog",
    ],
)
def test_catalog_parsed_with_invalid_input_exits_1_and_sends_nothing(
    argv: list[str], message: str, sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "catalog-parsed", *argv]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("imagegroups: error: ")
    assert message in err
    assert sent == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stage", "deploy", "--outcome", "failed", "--image-group-id", "x\ty"], "image_group"),
        (["--stage", "deploy", "--outcome", "failed", "--image-group-id", " x"], "image_group"),
        (
            ["--stage", "build-image", "--outcome", "failed", "--attempt", str(2**31)],
            "payload.attempt: Input should be less than or equal to 2147483647",
        ),
    ],
    ids=["control-char-id", "untrimmed-id", "attempt-past-32-bits"],
)
def test_stage_finished_with_invalid_input_exits_1_and_sends_nothing(
    extra: list[str], message: str, sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "stage-finished", "--job-id", JOB, *extra]) == 1

    _out, err = capsys.readouterr()
    assert message in err
    assert sent == []


def test_catalog_parsed_from_a_catalog_file_sends_one_valid_event_and_prints_its_id(
    sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--job-id", JOB, "--catalog", str(FIXTURES / "tiny_catalog.json")]

    assert main(["publish", "catalog-parsed", *argv]) == 0

    [event] = sent
    parsed = CatalogParsedEvent.model_validate(event)
    assert capsys.readouterr().out == f"event_id: {parsed.event_id}\n"
    assert str(parsed.job_id) == JOB
    assert parsed.payload.image_group_id == "tiny-cluster-v1"
    assert parsed.payload.roles == ["login_node_x86_64", "slurm_node_x86_64"]
    assert (parsed.payload.catalog_name, parsed.payload.catalog_version) == ("tiny", "1.0")


def test_catalog_parsed_from_roles_keeps_their_order_and_images(
    sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--job-id", JOB, "--image-group-id", "g1", "--role", "b=b-v2.img", "--role", "a"]

    assert main(["publish", "catalog-parsed", *argv, "--json"]) == 0

    printed = json.loads(capsys.readouterr().out)
    [event] = sent
    assert printed == {"event_id": event["event_id"], "event": event}
    assert event["payload"] == {
        "image_group_id": "g1",
        "roles": ["b", "a"],
        "role_images": {"b": "b-v2.img"},
    }


def test_stage_finished_carries_every_optional_field(
    sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    request_id, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    argv = ["--job-id", JOB, "--stage", "restart", "--outcome", "failed", "--attempt", "2"]
    argv += ["--image-group-id", "g1", "--detail", '{"log": "x"}', "--error-code", "E1"]
    argv += ["--error-summary", "boom", "--request-event-id", request_id]
    argv += ["--correlation-id", correlation]

    assert main(["publish", "stage-finished", *argv]) == 0

    [event] = sent
    parsed = StageFinishedEvent.model_validate(event)
    assert capsys.readouterr().out == f"event_id: {parsed.event_id}\n"
    assert str(parsed.correlation_id) == correlation
    assert parsed.payload.model_dump(exclude_none=True) == {
        "stage": "restart",
        "outcome": "failed",
        "image_group_id": "g1",
        "attempt": 2,
        "request_event_id": uuid.UUID(request_id),
        "error_code": "E1",
        "error_summary": "boom",
        "result_detail": {"log": "x"},
    }


def test_publish_quiet_prints_the_bare_event_id_for_a_script(
    sent: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--job-id", JOB, "--stage", "deploy", "--outcome", "succeeded", "--quiet"]

    assert main(["publish", "stage-finished", *argv]) == 0

    [event] = sent
    assert capsys.readouterr().out == f"{event['event_id']}\n"


def test_publish_json_with_the_broker_down_prints_an_error_document_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kombu.exceptions import OperationalError

    def refuse(event: dict[str, Any]) -> str:
        raise OperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(publish_commands, "_send", refuse)
    argv = ["--job-id", JOB, "--stage", "deploy", "--outcome", "failed", "--json"]

    assert main(["publish", "stage-finished", *argv]) == 1

    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": "broker error: OperationalError: Error 111 connecting to localhost:6379. "
        "Connection refused.",
        "error_type": "OperationalError",
    }
    assert err.startswith("imagegroups: error: broker error: OperationalError: Error 111")


def test_a_usage_error_under_json_still_prints_one_json_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list", "--limit", "0", "--json"]) == 2

    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "error": "argument --limit: must be at least 1, got 0",
        "error_type": "UsageError",
    }
    assert "usage: imagegroups list" in err


# simulate and demo: thin launchers ---------------------------------------------------------


def test_simulate_starts_the_stand_in_with_the_given_behaviour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("workers.standin.simulator.run_worker", lambda **kw: calls.append(kw))

    argv = ["simulate", "--fail-rate", "0.25", "--delay", "0.5", "--seed", "7"]
    assert main([*argv, "--concurrency", "2"]) == 0

    assert calls == [{"fail_rate": 0.25, "delay": 0.5, "seed": 7, "concurrency": 2}]


def test_demo_hands_the_group_count_to_the_demo_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def demo_main(*, groups: int) -> int:
        calls.append(groups)
        return 0

    fake = types.ModuleType("workers.standin.demo")
    fake.main = demo_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.standin.demo", fake)

    assert main(["demo", "--groups", "3"]) == 0

    assert calls == [3]
