"""`imagegroups demo`: the whole flow in one process, with embedded workers and a live view."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from domain import ImageGroupStatus, StageName
from workers.celery import app
from workers.handlers import request_stage
from workers.outbox import OutboxSweeper, catalog_parsed, send, stage_finished
from workers.runtime import root
from workers.runtime.root import execute
from workers.settings import get_settings
from workers.standin import simulator
from workers.standin.demo_setup import (
    STAND_IN,
    DemoError,
    Setup,
    demo_setup,
    embedded_workers,
    prepare,
    stop_workers,
)
from workers.standin.demo_view import (
    STAGES,
    GroupRow,
    Summary,
    View,
    progress,
    read_row,
    read_summary,
    render_summary,
)

POLL_SECONDS = 0.15
ROLES = ("slurm_control_node", "slurm_node", "login_node")


@dataclass(frozen=True)
class GroupPlan:
    """One demo group, and the stage the stand-in pipeline fails on each listed attempt."""

    group_id: str
    job_id: str
    roles: tuple[str, ...]
    fail_on: Mapping[int, StageName] = field(default_factory=dict)


def plan_groups(count: int, prefix: str = "demo") -> list[GroupPlan]:
    """The 2nd of every 5 groups fails on both attempts, the 4th (or a lone group) only once."""
    plans = []
    for index in range(count):
        first, second = STAGES[index % 3], STAGES[(index + 1) % 3]
        fail_on: dict[int, StageName] = {}
        if index % 5 == 1:
            fail_on = {1: first, 2: second}
        elif index % 5 == 3 or count == 1:
            fail_on = {1: first}
        group_id = f"{prefix}-cluster-{index + 1:02d}"
        plans.append(GroupPlan(group_id, str(uuid.uuid4()), ROLES[: 2 + index % 2], fail_on))
    return plans


@dataclass
class ScriptedBehaviour(simulator.Behaviour):
    """The stand-in's answers: the planned failures first, then `fail_rate` at random."""

    plans: dict[str, GroupPlan] = field(default_factory=dict)

    def fails(self, request: simulator.Request) -> bool:
        plan = self.plans.get(request.image_group_id)
        if plan is not None and plan.fail_on.get(request.attempt) == request.stage:
            return True
        return super().fails(request)

    def why(self, request: simulator.Request) -> str:
        plan = self.plans.get(request.image_group_id)
        if plan is not None and plan.fail_on.get(request.attempt) == request.stage:
            return f"the demo's script fails {request.stage} on attempt {request.attempt}"
        return super().why(request)


@contextmanager
def scripted(behaviour: ScriptedBehaviour) -> Iterator[None]:
    """The demo's stand-in answers as planned for this run, and as by default after it."""
    STAND_IN.behaviour = behaviour
    try:
        yield
    finally:
        STAND_IN.behaviour = simulator.Behaviour()


class DemoRun:
    """Publishes the groups' first events, plays the operator, and watches the database."""

    def __init__(self, plans: Sequence[GroupPlan], where: str, hint: str | None = None) -> None:
        self.plans = plans
        self.where = where
        self.hint = hint
        self.redeployed: list[str] = []
        self.built: set[str] = set()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def publish(self) -> None:
        for plan in self.plans:
            send(app, catalog_parsed(plan.job_id, plan.group_id, list(plan.roles)))

    def build(self, plan: GroupPlan) -> None:
        # Sent once its catalog is in, as a real pipeline would; sent earlier, it would only
        # be retried until the catalog.parsed event before it had been handled.
        if plan.group_id not in self.built:
            self.built.add(plan.group_id)
            done = stage_finished(
                plan.job_id, "build-image", "succeeded", image_group_id=plan.group_id
            )
            send(app, done)

    def watch(self, view: View, timeout: float) -> list[GroupRow]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.snapshot()
            # Shown before acted on: the operator's redeploy answers a FAILED line, so that
            # line must already be on screen when the redeploy's note is printed.
            view.show(rows, self.elapsed())
            self.act(rows, view)
            if all(row.done for row in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(POLL_SECONDS)

    def act(self, rows: Sequence[GroupRow], view: View) -> None:
        """What the pipeline and the operator do about what was just seen."""
        for plan, row in zip(self.plans, rows, strict=True):
            if row.status == "parsed":
                self.build(plan)
            elif row.status == ImageGroupStatus.FAILED and row.attempt == 1:
                self.redeploy(row.group_id, view)

    def redeploy(self, group_id: str, view: View) -> None:
        if group_id in self.redeployed:
            return
        self.redeployed.append(group_id)
        self.request_deploy(group_id)
        view.note(f"operator: imagegroups request deploy {group_id}  (attempt 2)", self.elapsed())

    def request_deploy(self, group_id: str) -> None:
        execute(lambda deps: request_stage(group_id, StageName.DEPLOY, deps=deps), root.runtime())

    def snapshot(self) -> list[GroupRow]:
        with root.runtime().new_uow() as uow:
            return [read_row(uow, p.group_id, p.job_id, len(p.roles)) for p in self.plans]

    def summary(self) -> Summary:
        ids, elapsed = [p.group_id for p in self.plans], self.elapsed()
        with root.runtime().new_uow() as uow:
            return read_summary(
                uow,
                ids,
                redeploys=len(self.redeployed),
                elapsed=elapsed,
                where=self.where,
                hint=self.hint,
            )


def _where(setup: Setup, example: str) -> tuple[str, str | None]:
    """Where the groups are, and (for the demo's own SQLite file) a command that shows one."""
    url = setup.settings.database_url
    if not setup.fresh_database:
        return make_url(url).render_as_string(hide_password=True), None
    return f"{url} (kept)", f"DATABASE_URL={shlex.quote(url)} {cli_path()} history {example}"


def cli_path() -> str:
    """`imagegroups` as a fresh shell finds it: by full path, since its venv may be inactive."""
    beside = Path(sys.executable).with_name("imagegroups")
    found = str(beside) if beside.is_file() else shutil.which("imagegroups")
    return shlex.quote(found or "imagegroups")


def _run(setup: Setup, run: DemoRun, out: IO[str], timeout: float) -> list[GroupRow]:
    workers = embedded_workers(setup)
    # `celery worker` starts its sweeper on worker_ready, which embedded workers never send;
    # without one, a follow-on whose publish failed would wait in the outbox for ever.
    sweeper = OutboxSweeper(lambda: root.runtime().relay, interval=0.5, grace=1.0)
    with ExitStack() as stack:
        stack.callback(stop_workers, workers)
        for worker in workers:
            worker.start()
        sweeper.start()
        stack.callback(sweeper.stop)
        with progress(out) as view:
            run.started = time.monotonic()
            run.publish()
            rows = run.watch(view, timeout)
        render_summary(run.summary(), out)
    return rows


def main(
    groups: int = 10,
    *,
    out: IO[str] | None = None,
    timeout: float = 60.0,
    fail_rate: float = 0.0,
    delay: float = 0.0,
    seed: int = 7,
) -> int:
    """Run `groups` groups through the whole flow; 0 when every one finished, else 1."""
    out = out or sys.stdout
    if groups < 1:
        print("demo: --groups must be at least 1", file=sys.stderr)
        return 2
    setup = demo_setup(get_settings())
    plans = plan_groups(groups, "demo" if setup.fresh_database else f"demo-{uuid.uuid4().hex[:6]}")
    behaviour = ScriptedBehaviour(fail_rate, delay, seed, plans={p.group_id: p for p in plans})
    run = DemoRun(plans, *_where(setup, plans[min(1, groups - 1)].group_id))
    try:
        prepare(setup)
        with scripted(behaviour):
            rows = _run(setup, run, out, timeout)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        root.configure(None)
    late = ", ".join(f"{row.group_id} ({row.status})" for row in rows if not row.done)
    if late:
        print(f"demo: timed out after {timeout:.0f}s; unfinished: {late}", file=sys.stderr)
        return 1
    return 0
