"""The anchors a user and an engineer compare the worker with, interleaved in one run.

For each repeat, in this order: the Celery ceiling (a no-op task with Flower's task events,
bench/noop_app.py), the same no-op committing one single-row INSERT per task (the ceiling for
any Celery worker that Flower watches and that commits once per event), the naive peer
(bench/naive_app.py), ours, and PostgreSQL's limit for our own transaction (bench/pg_limit.py);
all on the same machine, broker and worker count. Best and median of each, the ratios ours/peer,
ours/pg-limit, ours/celery-ceiling and ours/commit-ceiling for build results and for
catalog.parsed, and how far above the peer the commit ceiling itself is: what stock Celery
with one durable commit per event, and nothing else, would be against the peer.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.anchors import bare, ours
from bench.drain import Drain
from bench.meter import Cpu
from bench.peer import naive
from bench.pg_limit import capture, pg_limit
from bench.stack import Stack

PICKS = ("median", "best")
KINDS = {"catalog": "catalog.parsed", "build": "build results"}
ANCHORS = {
    "ceiling": "celery ceiling: no-op + task events",
    "commit": "commit ceiling: the no-op + one commit",
    "peer": "naive peer: Celery + ORM, no in/outbox",
    "ours": "ours",
    "pg_limit": "pg-limit: our SQL via libpq, pipelined",
}
RATIOS = {
    "ours/peer": "peer",
    "ours/pg-limit": "pg_limit",
    "ours/celery-ceiling": "ceiling",
    "ours/commit-ceiling": "commit",
}


@dataclass
class Comparison:
    events: int
    concurrency: int
    repeat: int
    #: anchor -> kind -> one drain per repeat (the ceiling's no-op drain stands for both kinds)
    runs: dict[str, dict[str, list[Drain]]] = field(default_factory=dict)
    statements: dict[str, int] = field(default_factory=dict)  # pg-limit, per event

    def add(self, anchor: str, catalog: Drain, build: Drain) -> None:
        kinds = self.runs.setdefault(anchor, {"catalog": [], "build": []})
        kinds["catalog"].append(catalog)
        kinds["build"].append(build)

    def rate(self, anchor: str, kind: str, pick: str) -> float:
        rates = [d.rate for d in self.runs[anchor][kind]]
        return max(rates) if pick == "best" else statistics.median(rates)

    def ratios(self, of: str = "ours") -> dict[str, dict[str, dict[str, float]]]:
        """{"ours/peer": {"build": {"median": .., "best": ..}, ..}, ..}"""
        return {
            name: {
                kind: {
                    pick: self.rate(of, kind, pick) / self.rate(base, kind, pick)
                    for pick in ("median", "best")
                }
                for kind in KINDS
            }
            for name, base in RATIOS.items()
            if base != of
        }

    def headroom(self) -> dict[str, dict[str, float]]:
        """The commit ceiling over the peer: stock Celery with one commit per event, and
        nothing else, against the peer."""
        return {
            kind: {p: self.rate("commit", kind, p) / self.rate("peer", kind, p) for p in PICKS}
            for kind in KINDS
        }

    def summary(self) -> dict[str, Any]:
        rates = {
            a: {k: {p: self.rate(a, k, p) for p in ("best", "median")} for k in KINDS}
            for a in self.runs
        }
        return {"rates": rates, "ratios": self.ratios(), "commit-ceiling/peer": self.headroom()}


def comparison(stack: Stack, n: int, concurrency: int, repeat: int) -> Comparison:
    """Every anchor `repeat` times, interleaved, so drift on the machine hits them alike."""
    captured = capture(stack)
    found = Comparison(n, concurrency, repeat)
    for _ in range(repeat):
        ceiling = bare(stack, n, concurrency, task_events=True)
        found.add("ceiling", ceiling, ceiling)
        committed = bare(stack, n, concurrency, task_events=True, commit=True)
        found.add("commit", committed, committed)
        peer = naive(stack, n, concurrency)
        found.add("peer", peer.catalog, peer.build)
        mine = ours(stack, n, concurrency)
        found.add("ours", mine.catalog, mine.build)
        limit = pg_limit(stack, n, concurrency, captured)
        found.add("pg_limit", limit.catalog, limit.build)
        found.statements = limit.statements
    return found


def lines(c: Comparison, cpu: Any, cpu_head: str) -> list[str]:
    """The report's section: rates, ratios, the CPU of each anchor's median build run, checks."""
    out = [
        f"ANCHORS  1 worker, --concurrency {c.concurrency} (pg-limit: {c.concurrency} libpq "
        f"clients, {c.statements.get('catalog', 0)} + {c.statements.get('build', 0)} statements "
        f"per event), {c.events} pre-loaded events per drain, {c.repeat} interleaved run(s)",
        f"{'events per s':40} {'catalog.parsed':>16}   {'build results':>16}",
        f"{'':40} {'best':>7} {'median':>8}   {'best':>7} {'median':>8}",
    ]
    for anchor, label in ANCHORS.items():
        cells = [f"{c.rate(anchor, k, p):7.0f}" for k in KINDS for p in ("best", "median")]
        out.append(f"{label:40} {cells[0]} {cells[1]:>8}   {cells[2]} {cells[3]:>8}")
    out.append(f"{'ratio, median (best)':40} {'catalog.parsed':>16}   {'build results':>16}")
    for name, kinds in c.ratios().items():
        cells = [f"{kinds[k]['median']:.2f} ({kinds[k]['best']:.2f})" for k in KINDS]
        out.append(f"{name:40} {cells[0]:>16}   {cells[1]:>16}")
    room = c.headroom()
    cells = [f"{room[k]['median']:.2f} ({room[k]['best']:.2f})" for k in KINDS]
    out.append(f"{'commit-ceiling/peer':40} {cells[0]:>16}   {cells[1]:>16}")
    out.append(f"CPU of each median build run, in cores: {cpu_head}")
    for anchor, label in ANCHORS.items():
        drain = _median(c.runs[anchor]["build"])
        out.append(f"  {label:38} {cpu(drain.cpu)}")
    out.append("checks (every run verified; the last one shown):")
    for anchor in ANCHORS:
        for kind in KINDS if anchor not in ("ceiling", "commit") else ("build",):
            runs = c.runs[anchor][kind]
            rates = ", ".join(f"{d.rate:.0f}/s" for d in runs)
            out.append(f"  {runs[-1].label}: {runs[-1].check or 'drained'}; runs {rates}")
    return out


def _median(drains: list[Drain]) -> Drain:
    ordered = sorted(drains, key=lambda d: d.rate)
    return ordered[(len(ordered) - 1) // 2] if ordered else Drain("", 0, 0.0, Cpu())
