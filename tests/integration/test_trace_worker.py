"""A real worker handles a group that fails, is redeployed and deploys: `trace` shows the chain
linked by causation_id, and `history` still says why attempt 1 failed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.flow import follow_ons, new_job, wait_status
from tests.integration.stack import Stack, wait_for
from workers import outbox

pytestmark = pytest.mark.integration

GROUP = "traced-1"


def trace(s: Stack) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(s.run_cli("trace", GROUP, "--json").stdout)
    return document


def request(s: Stack, attempt: int) -> str:
    def sent() -> str:
        for m in follow_ons(s, GROUP):
            if m.task_name == "pipeline.deploy" and m.body["payload"]["attempt"] == attempt:
                return m.event_id
        return ""

    return wait_for(sent, timeout=30, what=f"deploy request {attempt} in the outbox")


def test_trace_links_a_redeployed_groups_events_and_history_keeps_attempt_1s_failure(
    manual: Stack,
) -> None:
    s, job = manual, new_job()
    # The build result first: it is retried until its catalog lands, so it takes deliveries.
    built = outbox.stage_finished(job, "build-image", "succeeded")
    outbox.send(s.client, built)
    wait_for(
        lambda: s.query(lambda uow: uow.deliveries.first_counted_at(built["event_id"])),
        timeout=30,
        what="the build result retried before its catalog",
    )
    outbox.send(s.client, outbox.catalog_parsed(job, GROUP, ["compute"]))
    wait_status(s, GROUP, "DEPLOYING")
    first = request(s, 1)
    failed = outbox.stage_finished(
        job, "deploy", "failed", attempt=1, causation_id=first,
        error_code="E_DEPLOY", error_summary="node n2 unreachable",
    )  # fmt: skip
    outbox.send(s.client, failed)
    wait_status(s, GROUP, "FAILED")
    outbox.send(s.client, failed)  # a second send of the same event: a duplicate
    s.run_cli("request", "deploy", GROUP)
    second = request(s, 2)
    deployed = outbox.stage_finished(job, "deploy", "succeeded", attempt=2, causation_id=second)
    outbox.send(s.client, deployed)
    wait_status(s, GROUP, "RESTARTING")

    def settled() -> dict[str, Any]:
        document = trace(s)
        outs = [e for e in document["events"] if e["direction"] == "out"]
        dup = next(e for e in document["events"] if e["event_id"] == failed["event_id"])
        done = len(outs) == 3 and all(e["outcome"] == "sent" for e in outs)
        return document if done and dup["duplicates"] == 1 else {}

    events = wait_for(settled, timeout=30, what="every follow-on sent, the duplicate counted")[
        "events"
    ]
    by_id = {e["event_id"]: e for e in events}
    ins = [e for e in events if e["direction"] == "in"]
    # The catalog and the build result race (a build before its catalog is retried): their
    # order may vary; everything after them follows from causes.
    assert sorted(str(e["event_type"]) for e in ins[:2]) == ["catalog.parsed", "stage.finished"]
    assert [e["event_type"] for e in ins[2:]] == ["stage.finished", None, "stage.finished"]
    assert all(e["outcome"] == "applied" for e in ins)
    build = next(e for e in ins[:2] if e["event_type"] == "stage.finished")
    redeploy = ins[3]
    assert redeploy["cause"]["command"] == "request deploy"
    assert by_id[first]["causation_id"] == build["event_id"]  # build result -> request 1
    assert by_id[failed["event_id"]]["causation_id"] == first  # request 1 -> its failure
    assert by_id[failed["event_id"]]["deliveries"] == 2
    assert build["event_id"] == built["event_id"] and build["deliveries"] >= 2
    assert by_id[second]["causation_id"] == redeploy["event_id"]  # redeploy -> request 2
    pxe = next(e for e in events if e["event_type"] == "pxe_boot.requested")
    assert pxe["causation_id"] == deployed["event_id"]
    linked = [e for e in events if e["causation_id"] in by_id]
    assert len(linked) == 5 and all(e["after_ms"] is not None for e in linked)
    # A follow-on is sent after its cause was handled (the sent mark may trail the publish).
    assert all(e["after_ms"] >= 0 for e in linked if e["direction"] == "out")

    history = json.loads(s.run_cli("history", GROUP, "--json").stdout)
    attempt_1 = next(h for h in history if h["to_status"] == "FAILED")
    assert attempt_1["cause"] == {
        "kind": "event",
        "event_type": "stage.finished",
        "stage": "deploy",
        "attempt": 1,
        "outcome": "failed",
        "error_code": "E_DEPLOY",
        "error_summary": "node n2 unreachable",
        "command": None,
    }
    assert history[-1]["cause"]["attempt"] == 2
