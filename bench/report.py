"""One plain-text report of a bench run, and the same figures as JSON."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from bench import comparison
from bench.anchors import Throughput
from bench.comparison import Comparison
from bench.drain import Drain
from bench.large import Large
from bench.machine import describe
from bench.memory import TARGET, Memory
from bench.meter import Cpu
from bench.reaction import Reaction
from bench.scaling import ScaleRow
from bench.spy import Profile

GOALS = {"catalog": 0.60, "build": 0.50}
P99_GOAL_MS = 20.0
LARGE_GOAL = 0.90
DISTURBED = 0.25  # cores used by other processes during a drain


@dataclass
class Results:
    header: dict[str, Any]
    throughput: Throughput | None = None
    anchors: Comparison | None = None
    reaction: Reaction | None = None
    scaling: list[ScaleRow] = field(default_factory=list)
    large: Large | None = None
    memory: Memory | None = None
    profile: Profile | None = None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _cpu(c: Cpu) -> str:
    flag = "  disturbed" if c.other > DISTURBED else ""
    return (
        f"{c.worker:4.2f} {c.consumer:4.2f} {c.postgres:4.2f} {c.redis:4.2f} "
        f"{c.machine:4.2f}/{c.cores} {c.other:4.2f}{flag}"
    )


_CPU_HEAD = "wrk  cons pg   rds  busy   other"


def _drain_line(d: Drain, base: float, goal: float | None = None) -> str:
    ratio = d.rate / base if base else math.nan
    aim = f">={goal:.2f} {'met' if ratio >= goal else 'NOT met'}" if goal else ""
    return f"{d.label:36} {d.rate:8.0f} {ratio:6.2f}  {aim:14} {_cpu(d.cpu)}"


def throughput(t: Throughput) -> list[str]:
    base = t.bare.rate
    lines = [
        f"THROUGHPUT  1 worker, --concurrency {t.concurrency}, {t.events} pre-loaded events per "
        "drain, first taken to last acked",
        f"{'anchor':36} {'per s':>8} {'ratio':>6}  {'goal':14} {_CPU_HEAD}  (cores)",
        _drain_line(t.bare, base),
        _drain_line(t.observed, base),
        _drain_line(t.catalog, base, GOALS["catalog"]),
        _drain_line(t.build, base, GOALS["build"]),
        f"  against bare Celery with events + results: catalog.parsed "
        f"{t.catalog.rate / t.observed.rate:.2f}, "
        f"build results {t.build.rate / t.observed.rate:.2f}",
    ]
    lines += [
        f"  {d.label}: {d.check}" for d in (t.bare, t.observed, t.catalog, t.build) if d.check
    ]
    return lines


def reaction(r: Reaction) -> list[str]:
    s = r.summary()
    met = "met" if s["p99_ms"] <= P99_GOAL_MS else "NOT met"
    return [
        f"REACTION  deploy succeeded published -> pipeline.pxe_boot queued, {r.rate:g}/s for "
        f"{r.seconds:g} s ({r.sent} events, 1 worker x 2)",
        f"p50 {s['p50_ms']:.1f} ms   p99 {s['p99_ms']:.1f} ms   max {s['max_ms']:.1f} ms   "
        f"missing {r.missing}   goal p99 <= {P99_GOAL_MS:g} ms: {met}",
    ]


def scaling(rows: list[ScaleRow]) -> list[str]:
    lines = [
        "SCALING  build results and bare Celery no-op on one queue (CPU during the build drain)",
        f"{'config':16} {'bare/s':>7} {'build/s':>8} {'ratio':>6} {'catalog/s':>9}  {_CPU_HEAD}",
    ]
    for row in rows:
        lines.append(
            f"{row.label:16} {row.bare.rate:7.0f} {row.build.rate:8.0f} {row.ratio:6.2f} "
            f"{row.catalog.rate:9.0f}  {_cpu(row.build.cpu)}"
        )
    lines += [f"  bare {row.label}: CPU {_cpu(row.bare.cpu)}" for row in rows]
    return lines


def large(g: Large) -> list[str]:
    met = "met" if g.ratio >= LARGE_GOAL else "NOT met"
    sizes = ", ".join(f"{t} {_mb(size)}" for t, (_n, size) in g.tables.items())
    return [
        f"LARGE TABLES  {g.rows:,} rows in each of {', '.join(g.tables)} "
        f"(filled in {g.prefill_seconds:.0f} s)",
        f"fresh database   build {g.fresh.rate:6.0f}/s   catalog {g.fresh_catalog.rate:6.0f}/s"
        f"   CPU {_cpu(g.fresh.cpu)}",
        f"pre-filled       build {g.large.rate:6.0f}/s   catalog {g.large_catalog.rate:6.0f}/s"
        f"   CPU {_cpu(g.large.cpu)}",
        f"ratio {g.ratio:.2f} (catalog {g.large_catalog.rate / g.fresh_catalog.rate:.2f}); "
        f"goal within 10% (>= {LARGE_GOAL:.2f}): {met}",
        f"  sizes with indexes: {sizes}",
    ]


def memory(m: Memory) -> list[str]:
    cfg = ", ".join(f"{k}={v}" for k, v in m.config.items())
    lines = [
        f"BROKER MEMORY  {m.server}; CELERY_RESULT_BACKEND={m.result_backend_env}",
        f"  celeryconfig: {cfg}",
        f"{'events handled':>15} {'used_memory':>12}   keys by kind (count, MEMORY USAGE)",
        f"{'0':>15} {_mb(m.baseline):>12}",
    ]
    for p in m.points:
        kinds = "; ".join(f"{k} {n:,} {_mb(b)}" for k, (n, b) in sorted(p.keys.items()))
        lines.append(f"{p.events:>15,} {_mb(p.used_memory):>12}   {kinds}")
    last = m.points[-1]
    if m.per_event < 16:
        growth = f"no growth per event beyond allocator noise ({m.per_event:,.0f} B)"
    else:
        growth = f"per event {m.per_event:,.0f} B -> at {TARGET:,} events about {_mb(m.at_target)}"
    lines.append(
        f"{growth} (extrapolated from {last.events:,} handled; follow-on queues emptied as the "
        f"pipeline would, {_mb(m.follow_on_bytes)} for the last round's deploy requests)"
    )
    return lines


def profile(p: Profile) -> list[str]:
    lines = [
        f"PROFILE  py-spy, {p.seconds:.0f} s at {p.rate:.0f} build results/s (bench/PROFILE.md); "
        f"CPU {_cpu(p.cpu)}",
        f"{'pool processes':44} {'% wall':>7} {'% busy':>7} {'ms/event':>9}",
    ]
    for label, wall, busy, ms in p.rows("pool"):
        lines.append(f"{label:44} {wall:7.1f} {busy:7.1f} {ms:9.2f}")
    lines.append(f"{'main process (consumer)':44}")
    for label, wall, busy, ms in p.rows("main"):
        lines.append(f"{label:44} {wall:7.1f} {busy:7.1f} {ms:9.2f}")
    return lines


def text(results: Results) -> str:
    h = results.header
    out = [
        f"imagegroup-worker bench  {h['started']}  code {h['code']}  {h['cores']} cores",
        f"command: {h['command']}",
        *([describe(h["machine"])] if "machine" in h else []),
        f"CELERY_RESULT_BACKEND={h['result_backend']}  settings {h['settings'] or 'defaults'}",
        "CPU columns, in cores: the worker(s) with their pool processes, of which the consumer "
        "(main process), PostgreSQL, Redis, the whole machine, other processes (high = disturbed)",
    ]
    parts: list[list[str]] = []
    if results.throughput:
        parts.append(throughput(results.throughput))
    if results.anchors:
        parts.append(comparison.lines(results.anchors, _cpu, _CPU_HEAD))
    if results.reaction:
        parts.append(reaction(results.reaction))
    if results.scaling:
        parts.append(scaling(results.scaling))
    if results.large:
        parts.append(large(results.large))
    if results.memory:
        parts.append(memory(results.memory))
    if results.profile:
        parts.append(profile(results.profile))
    for part in parts:
        out += ["", *part]
    out += [
        "",
        f"total {h.get('seconds', 0):.0f} s, of which {h.get('waited', 0):.0f} s waiting "
        "for a quiet machine before measurements",
    ]
    return "\n".join(out)


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, with the derived figures (rates, ratios) spelled out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("rate", "ratio", "other", "missing", "per_event", "at_target", "label"):
            if hasattr(type(value), name) and isinstance(getattr(type(value), name), property):
                found[name] = _plain(getattr(value, name))
        if isinstance(value, Reaction):
            found.update(value.summary())
            found.pop("latencies_ms")
        if isinstance(value, Throughput):
            found["ratios"] = value.ratios()
        if isinstance(value, Comparison):
            found.update(value.summary())
        return found
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def as_json(results: Results) -> dict[str, Any]:
    plain: dict[str, Any] = _plain(results)
    return plain
