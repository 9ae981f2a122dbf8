"""Profile: py-spy records a running worker (main and pool processes, waiting included) for a
while as it drains build results; bench/layers.py sorts the samples into layers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import events, layers
from bench.drain import database_name, wait_idle
from bench.meter import Cpu, Meter
from bench.stack import OURS, Stack, Worker

IDLE = "idle"


@dataclass
class Profile:
    command: str
    seconds: float
    concurrency: int
    rate: float  # build results handled per second while recording
    dry: bool  # the queue ran empty before the recording ended
    cpu: Cpu = field(default_factory=Cpu)
    pool: dict[str, int] = field(default_factory=dict)
    main: dict[str, int] = field(default_factory=dict)
    pool_leaves: list[tuple[str, int]] = field(default_factory=list)
    main_leaves: list[tuple[str, int]] = field(default_factory=list)

    def rows(self, process: str) -> list[tuple[str, float, float, float]]:
        """(layer, % of wall time, % of busy time, ms per event) for "pool" or "main"."""
        counts = self.pool if process == "pool" else self.main
        total = sum(counts.values()) or 1
        busy = sum(n for k, n in counts.items() if not k.startswith(IDLE)) or 1
        processes = self.concurrency if process == "pool" else 1
        per_event = processes / self.rate * 1000 if self.rate else 0.0
        return [
            (
                label,
                100 * n / total,
                0.0 if label.startswith(IDLE) else 100 * n / busy,
                n / total * per_event,
            )
            for label, n in sorted(counts.items(), key=lambda kv: -kv[1])
        ]


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@dataclass
class _Recording:
    argv: list[str]
    rate: float
    dry: bool
    cpu: Cpu


def _record(
    stack: Stack, workers: list[Worker], url: str, exe: str, seconds: float, out: Path
) -> _Recording:
    """py-spy on the first worker and its pool for `seconds`, the queue full meanwhile."""
    r = stack.redis
    pids = lambda: [p for w in workers for p in w.pids()]  # noqa: E731
    meter = Meter(pids, r, database_name(url), lambda: [workers[0].popen.pid])
    argv = [exe, "record", "--pid", str(workers[0].popen.pid), "--subprocesses"]
    argv += ["--idle", "--threads", "--rate", "100"]
    argv += ["--duration", str(round(seconds)), "--format", "raw", "-o", str(out)]
    before, start = r.llen(events.EVENTS_QUEUE), time.perf_counter()
    meter.start()
    subprocess.run(argv, check=True, capture_output=True)
    cpu = meter.stop()
    after, elapsed = r.llen(events.EVENTS_QUEUE), time.perf_counter() - start
    return _Recording(argv, (before - after) / elapsed, after == 0, cpu)


def profile(stack: Stack, seconds: float, concurrency: int = 2, out: Path | None = None) -> Profile:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    out = out or stack.logs / "py-spy.txt"
    n = max(500, int(seconds * 450))  # more than the worker drains while recorded
    r = stack.redis
    with stack.database() as url:
        groups = events.groups(n)
        events.preload(stack.client, (events.catalog_parsed(g) for g in groups))
        events.park(r, events.EVENTS_QUEUE, "catalog")
        events.preload(stack.client, (events.stage_finished(g, "build-image") for g in groups))
        events.park(r, events.EVENTS_QUEUE, "build")
        with stack.workers(OURS, concurrency, stack.env(url)) as workers:
            events.release(r, events.EVENTS_QUEUE, "catalog")
            wait_idle(stack, events.EVENTS_QUEUE, workers)
            stack.calm()
            events.release(r, events.EVENTS_QUEUE, "build")
            time.sleep(1.0)  # past the first statements and connections
            recorded = _record(stack, workers, url, exe, seconds, out)
            wait_idle(stack, events.EVENTS_QUEUE, workers, timeout=900)
        r.delete("pipeline.deploy")
    samples = layers.parse(out.read_text())
    return Profile(
        command=" ".join(Path(a).name if a == exe else a for a in recorded.argv),
        seconds=seconds,
        concurrency=concurrency,
        rate=recorded.rate,
        dry=recorded.dry,
        cpu=recorded.cpu,
        pool=dict(layers.classify(samples, "pool", layers.POOL)),
        main=dict(layers.classify(samples, "main", layers.MAIN)),
        pool_leaves=layers.leaves(samples, "pool"),
        main_leaves=layers.leaves(samples, "main"),
    )


def markdown(found: Profile, command: str) -> str:
    """bench/PROFILE.md: the breakdown as tables, with the command that produced it."""
    lines = [
        "# Where one build result's time goes",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}: one worker "
        f"(`celery -A workers worker --concurrency {found.concurrency}`) draining pre-loaded "
        f"build-image results (catalogs parsed first) while py-spy recorded it:",
        "",
        f"    {found.command}",
        "",
        f"{found.rate:.0f} build results/s while recorded ({found.seconds:.0f} s at 100 Hz; "
        "wall-clock samples of each process's main thread, waiting included; py-spy pauses the "
        "process for each sample, which costs it a few percent of its rate). CPU meanwhile, "
        f"in cores: worker {found.cpu.worker:.2f} (consumer {found.cpu.consumer:.2f}), "
        f"PostgreSQL {found.cpu.postgres:.2f}, Redis {found.cpu.redis:.2f}, bench and py-spy "
        f"{found.cpu.bench:.2f}, whole machine {found.cpu.machine:.2f} of {found.cpu.cores}, "
        f"other processes {found.cpu.other:.2f}."
        + (" The queue ran dry before the end: idle is inflated." if found.dry else ""),
        "",
    ]
    for process, title in (("pool", "Pool processes"), ("main", "Main process (consumer)")):
        lines += [
            f"## {title}",
            "",
            "| layer | % of wall time | % of busy time | ms per event |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {wall:.1f} | {'' if label.startswith(IDLE) else f'{busy:.1f}'} "
            f"| {ms:.2f} |"
            for label, wall, busy, ms in found.rows(process)
        ]
        lines.append("")
    return "\n".join([*lines, *LEGEND])


#: How the layers are drawn (bench/layers.py has the exact rules), after the tables.
LEGEND = [
    "## Reading it",
    "",
    "Each sample goes to the first layer whose rule it matches, in the order of bench/layers.py:",
    "",
    "- *ms per event* is the layer's share of the processes' wall time divided by the events "
    "handled meanwhile: two pool processes give 2/rate seconds of pool time per event;",
    "- *publish follow-on*: everything under the relay's publish (kombu message, LPUSH, and the "
    "task-sent event Celery publishes with `task_send_sent_event`);",
    "- *commit*: everything under a commit call, including write statements a psycopg pipeline "
    "sends with it; *statements: waiting on PostgreSQL* is the time in psycopg's wait and send "
    "calls outside a commit (libpq's C work included: py-spy sees no deeper);",
    "- *store result*: Celery's result backend (it reads the stored meta before writing it);",
    "- *idle* in a pool process is the wait for the consumer to hand over the next task; in the "
    "main process, the event loop's wait for a socket to be ready;",
    "- main process, *Redis: …*: waiting on Redis in that step; *redis-py client objects*: "
    "building `redis.Redis` objects (kombu builds one per fanout publish, per delivery and "
    "per ack).",
]
