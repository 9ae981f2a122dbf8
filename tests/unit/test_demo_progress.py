"""The demo's progress reads in order (a FAILED line, with its stage and reason, before the
redeploy it gets), and its summary ends with a command to paste."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest

from workers.standin import demo
from workers.standin.demo_view import GroupRow, PlainView, render_summary, summarize


class ScriptedRun(demo.DemoRun):
    """Sees the given snapshots one after the other; the operator's request goes nowhere."""

    def __init__(self, snapshots: Sequence[list[GroupRow]]) -> None:
        super().__init__(demo.plan_groups(len(snapshots[0]), "unit"), where="nowhere")
        self.snapshots = list(snapshots)
        self.requested: list[str] = []

    def snapshot(self) -> list[GroupRow]:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def request_deploy(self, group_id: str) -> None:
        self.requested.append(group_id)


def rows(*states: tuple[str, int]) -> list[GroupRow]:
    return [GroupRow(f"unit-cluster-{n:02d}", s, a, 2) for n, (s, a) in enumerate(states, 1)]


@pytest.fixture(autouse=True)
def no_polling_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "POLL_SECONDS", 0.0)


def test_the_failed_line_is_printed_before_the_operators_redeploy_of_that_group() -> None:
    run = ScriptedRun(
        [
            rows(("DEPLOYING", 1), ("DEPLOYING", 1)),
            rows(("FAILED", 1), ("DEPLOYED", 1)),
            rows(("DEPLOYING", 2), ("PASSED", 1)),
            rows(("PASSED", 2), ("PASSED", 1)),
        ]
    )
    out = io.StringIO()

    run.watch(PlainView(out), timeout=10)

    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    failed = lines.index("unit-cluster-01          FAILED     attempt 1")
    redeploy = lines.index("operator: imagegroups request deploy unit-cluster-01  (attempt 2)")
    assert failed < redeploy
    assert lines[redeploy + 1].startswith("unit-cluster-01          DEPLOYING  attempt 2")
    assert run.requested == ["unit-cluster-01"]


def test_a_group_failed_on_its_second_attempt_is_not_redeployed_again() -> None:
    run = ScriptedRun([rows(("FAILED", 2))])
    out = io.StringIO()

    finished = run.watch(PlainView(out), timeout=10)

    assert [row.done for row in finished] == [True]
    assert run.requested == []
    assert "operator:" not in out.getvalue()


def test_a_failed_line_names_the_stage_that_failed_and_why() -> None:
    out = io.StringIO()
    why = "deploy failed: SIMULATED_FAILURE: planned"
    failed = GroupRow("unit-cluster-01", "FAILED", 1, 2, why)

    PlainView(out).show([failed], elapsed=1.0)

    line = out.getvalue().split("] ", 1)[1]
    assert line == f"unit-cluster-01          FAILED     attempt 1  ({why})\n"


def test_the_summarys_closing_hint_is_a_command_on_a_line_of_its_own() -> None:
    hint = "DATABASE_URL=sqlite:////tmp/d/demo.db /venv/bin/imagegroups history unit-cluster-02"
    summary = summarize(
        {},
        outcomes={},
        dead_letters=0,
        redeploys=0,
        elapsed=1.0,
        where="sqlite:////tmp/d/demo.db (kept)",
        hint=hint,
    )
    out = io.StringIO()

    render_summary(summary, out)

    lines = out.getvalue().splitlines()
    assert "  database: sqlite:////tmp/d/demo.db (kept)" in lines
    assert lines[-1].strip() == hint
