"""What `imagegroups demo` shows: a live table or plain progress lines, then the summary."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Protocol

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from domain import (
    STAGE_FLOW,
    DeadLetterStatus,
    ImageGroupId,
    ImageGroupStatus,
    StageName,
    StageRecord,
    Transition,
)
from persistence.uow import StoreUnitOfWork

S = ImageGroupStatus
STAGES = (StageName.DEPLOY, StageName.PXE_BOOT, StageName.VALIDATE)
_STYLE = {S.PASSED.value: "bold green", S.FAILED.value: "bold red"}
_RUNNING = {flow.running.value for flow in STAGE_FLOW.values()}


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One group as last seen: a status value, or `sent` / `parsed` before the group exists.
    A FAILED group says which stage failed and why."""

    group_id: str
    status: str
    attempt: int
    roles: int
    failure: str | None = None

    @property
    def done(self) -> bool:
        """PASSED, or FAILED again after the operator's redeploy (a first FAILED is redeployed)."""
        failed_again = self.status == S.FAILED and self.attempt >= 2
        return self.status in (S.PASSED, S.CLEANED) or failed_again


def read_row(uow: StoreUnitOfWork, group_id: str, job_id: str, roles: int) -> GroupRow:
    group = uow.groups.find_by_id(ImageGroupId(group_id))
    if group is not None:
        failure = None
        if group.status is S.FAILED:
            failure = _failure(uow.stages.latest_failures([job_id]).get(job_id))
        return GroupRow(group_id, group.status.value, group.attempt, roles, failure)
    parsed = uow.catalogs.find_by_job_id(job_id) is not None
    return GroupRow(group_id, "parsed" if parsed else "sent", 0, roles)


def _failure(record: StageRecord | None) -> str:
    """`deploy failed: CODE: summary`, from the stage's record (written with the FAILED move)."""
    if record is None:
        return "no failed stage recorded"
    reason = ": ".join(text for text in (record.error_code, record.error_summary) if text)
    return f"{record.stage} failed" + (f": {reason}" if reason else "")


class View(Protocol):
    def show(self, rows: Sequence[GroupRow], elapsed: float) -> None: ...

    def note(self, text: str, elapsed: float) -> None: ...


class PlainView:
    """One line per change and no control codes, so a pipe, a log or a test reads plain text."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.seen: dict[str, tuple[str, int]] = {}

    def show(self, rows: Sequence[GroupRow], elapsed: float) -> None:
        for row in rows:
            if self.seen.get(row.group_id) != (row.status, row.attempt):
                self.seen[row.group_id] = (row.status, row.attempt)
                attempt = f"attempt {row.attempt}" if row.attempt else ""
                line = f"{row.group_id:<24} {row.status:<10} {attempt}".rstrip()
                self.note(f"{line}  ({row.failure})" if row.failure else line, elapsed)

    def note(self, text: str, elapsed: float) -> None:
        self.out.write(f"[{elapsed:6.2f}s] {text}\n")
        self.out.flush()


class LiveView:
    """A rich table redrawn in place; notes scroll above it."""

    def __init__(self, live: Live) -> None:
        self.live = live

    def show(self, rows: Sequence[GroupRow], elapsed: float) -> None:
        self.live.update(_table(rows, elapsed))

    def note(self, text: str, elapsed: float) -> None:
        self.live.console.print(f"[dim]\\[{elapsed:6.2f}s][/dim] {text}", highlight=False)


@contextmanager
def progress(out: IO[str]) -> Iterator[View]:
    """The live table on a terminal, plain lines anywhere else."""
    if not out.isatty():
        yield PlainView(out)
        return
    with Live(console=Console(file=out), refresh_per_second=8) as live:
        yield LiveView(live)


def _table(rows: Sequence[GroupRow], elapsed: float) -> Table:
    finished = sum(1 for row in rows if row.done)
    table = Table(title=f"image groups — {finished}/{len(rows)} finished — {elapsed:.1f}s")
    for column in ("image group", "status", "attempt", "roles", "why"):
        table.add_column(column, justify="right" if column in ("attempt", "roles") else "left")
    for row in rows:
        style = _STYLE.get(row.status, "yellow" if row.status in _RUNNING else "cyan")
        status = f"[{style}]{row.status}[/{style}]"
        why = escape(row.failure or "")
        table.add_row(row.group_id, status, str(row.attempt or "-"), str(row.roles), why)
    return table


@dataclass(frozen=True)
class Summary:
    groups: int
    statuses: Mapping[str, int]
    outcomes: Mapping[str, int]
    dead_letters: int
    redeploys: int
    stage_seconds: Mapping[StageName, list[float]]
    flow_seconds: list[float]
    elapsed: float
    where: str
    hint: str | None = None


def read_summary(
    uow: StoreUnitOfWork,
    group_ids: Sequence[str],
    *,
    redeploys: int,
    elapsed: float,
    where: str,
    hint: str | None = None,
) -> Summary:
    """The groups' histories, and the inbox and dead letters of the whole database."""
    return summarize(
        {group_id: uow.history.list_for_group(ImageGroupId(group_id)) for group_id in group_ids},
        outcomes=uow.inbox.count_by_outcome(),
        dead_letters=uow.dead_letters.count(DeadLetterStatus.DEAD),
        redeploys=redeploys,
        elapsed=elapsed,
        where=where,
        hint=hint,
    )


def summarize(
    histories: Mapping[str, Sequence[Transition]],
    *,
    outcomes: Mapping[str, int],
    dead_letters: int,
    redeploys: int,
    elapsed: float,
    where: str,
    hint: str | None = None,
) -> Summary:
    """Statuses, stage latencies and whole-flow times from the groups' histories."""
    statuses = Counter(h[-1].to_status.value if h else "not built" for h in histories.values())
    stage_seconds: dict[StageName, list[float]] = {stage: [] for stage in STAGES}
    for history in histories.values():
        for stage, seconds in stage_latencies(history):
            stage_seconds[stage].append(seconds)
    flows = [f for f in (flow_seconds(h) for h in histories.values()) if f is not None]
    return Summary(
        groups=len(histories),
        statuses=statuses,
        outcomes=outcomes,
        dead_letters=dead_letters,
        redeploys=redeploys,
        stage_seconds=stage_seconds,
        flow_seconds=flows,
        elapsed=elapsed,
        where=where,
        hint=hint,
    )


def stage_latencies(history: Sequence[Transition]) -> list[tuple[StageName, float]]:
    """Each time the group entered a stage's running status, how long until it left it."""
    running = {flow.running: stage for stage, flow in STAGE_FLOW.items()}
    found = []
    for index, entered in enumerate(history):
        stage = running.get(entered.to_status)
        left = next((t for t in history[index + 1 :] if t.from_status is entered.to_status), None)
        if stage is not None and left is not None:
            found.append((stage, (left.at - entered.at).total_seconds()))
    return found


def flow_seconds(history: Sequence[Transition]) -> float | None:
    """From BUILT to the last terminal status (a redeploy and its wait included)."""
    if not history or not history[-1].to_status.is_terminal():
        return None
    return (history[-1].at - history[0].at).total_seconds()


def render_summary(summary: Summary, out: IO[str]) -> None:
    order = [s.value for s in S] + ["not built"]
    statuses = ", ".join(f"{s} {summary.statuses[s]}" for s in order if summary.statuses.get(s))
    outcomes = dict.fromkeys(("applied", "duplicate", "stale"), 0) | dict(summary.outcomes)
    lines = [
        "",
        f"Summary: {summary.groups} groups in {summary.elapsed:.2f}s",
        f"  groups by status:   {statuses}",
        "  events by outcome:  "
        + ", ".join(f"{name} {count}" for name, count in outcomes.items())
        + f", dead-lettered {summary.dead_letters}",
        f"  operator redeploys: {summary.redeploys}",
        "  latency per stage (running status entered -> left):",
        *(_latency_line(stage.value, summary.stage_seconds[stage]) for stage in STAGES),
        _latency_line("whole flow (BUILT -> terminal)", summary.flow_seconds, indent=2),
        f"  database: {summary.where}",
    ]
    if summary.hint:
        # On a line of its own, so it can be copied whole.
        lines += ["", "A redeployed group's history, in any shell:", f"  {summary.hint}"]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _latency_line(name: str, seconds: Sequence[float], *, indent: int = 4) -> str:
    pad = " " * indent
    if not seconds:
        return f"{pad}{name:<10} no runs"
    median, most = statistics.median(seconds) * 1000, max(seconds) * 1000
    return f"{pad}{name:<10} median {median:8.1f} ms   max {most:8.1f} ms   ({len(seconds)} runs)"
