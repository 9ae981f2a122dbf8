"""Where a worker's wall time goes, from py-spy's raw (collapsed) stacks, taken with --idle so
waiting counts: each sample of a process's main thread is put in one layer by the first rule
whose frames it matches. Rules name files and functions, not the project's module layout, so
they survive refactors of workers/ and persistence/.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_PROCESS = re.compile(r'^process \d+:"')
_PG_WAIT: tuple[str, ...] = ("Connection.wait (psycopg", "_communicate_gen", "_fetch_gen")
_PG_WAIT += ("_exec_command (psycopg", "_send_query_prepared", "Pipeline.__exit__ (psycopg")
_REDIS_WAIT = ("send_packed_command", "_read_from_socket", "can_read (redis", "SocketBuffer")
_COMMIT = re.compile(r"(^|[.\s])(commit|_commit_impl|do_commit|_commit_gen) \(")


@dataclass(frozen=True)
class Rule:
    label: str
    anywhere: tuple[str, ...] = ()  # some frame contains one of these
    leaf: tuple[str, ...] = ()  # the innermost frame contains one of these
    commit: bool = False  # some frame is a commit
    without: tuple[str, ...] = ()  # no frame contains any of these

    def matches(self, frames: list[str]) -> bool:
        if self.without and any(s in f for f in frames for s in self.without):
            return False
        if self.anywhere and not any(s in f for f in frames for s in self.anywhere):
            return False
        if self.leaf and not (frames and any(s in frames[-1] for s in self.leaf)):
            return False
        return not self.commit or any(_COMMIT.search(f) for f in frames)


_TASK = "celery/app/trace.py"
#: A pool process: one event at a time, by phase of its handling.
POOL = [
    Rule(
        "idle: waiting for the next task",
        anywhere=("billiard/pool.py",),
        leaf=("_recv (billiard", "poll (billiard", "_poll (billiard"),
        without=(_TASK,),
    ),
    Rule(
        "publish follow-on (send_task, sent event)",
        anywhere=("workers/outbox.py", "Publisher."),
    ),
    Rule("store result (result backend)", anywhere=("celery/backends/",)),
    Rule("commit (round trip, WAL flush)", anywhere=("sqlalchemy/", "psycopg/"), commit=True),
    Rule("statements: waiting on PostgreSQL", anywhere=(_TASK,), leaf=_PG_WAIT),
    Rule("statements: SQLAlchemy (Python)", anywhere=(_TASK,), leaf=("sqlalchemy/",)),
    Rule("statements: psycopg (Python)", anywhere=(_TASK,), leaf=("psycopg/",)),
    Rule("envelope validation (pydantic)", anywhere=("pydantic", "accept.py")),
    Rule("handler, domain, repositories", anywhere=("workers/edge/task.py",)),
    Rule("Celery trace, request, events", anywhere=(_TASK,)),
    Rule("Celery pool (outside a task)"),
]
#: The main process: the consumer's event loop (fetch, hand to the pool, ack, task events).
MAIN = [
    # py-spy shows no frame for the C call: the leaf is kombu's own poll wrapper.
    Rule(
        "idle: event loop waiting (epoll)",
        leaf=("_epoll.poll", "select (", "poll (kombu/utils/eventio.py"),
    ),
    Rule("Redis: acks", anywhere=("QoS.ack", "basic_ack"), leaf=_REDIS_WAIT),
    Rule("Redis: task events", anywhere=("celery/events/",), leaf=_REDIS_WAIT),
    Rule("Redis: fetching messages", anywhere=("_brpop", "basic_get", "_get ("), leaf=_REDIS_WAIT),
    Rule("Redis: other (leases, restore, pidbox)", leaf=_REDIS_WAIT),
    Rule("redis-py client objects (Python)", leaf=("redis/",)),
    Rule("JSON (kombu/json)", leaf=("json/", "kombu/utils/json")),
    Rule("kombu transport (Python)", leaf=("kombu/",)),
    Rule("Celery consumer, requests, pool I/O", leaf=("celery/", "billiard/")),
    Rule("other"),
]


@dataclass
class Sample:
    process: str  # "main" or "pool"
    frames: list[str]
    count: int


def parse(raw: str) -> list[Sample]:
    """Main-thread samples of a worker recorded with `py-spy record --subprocesses --threads`."""
    samples = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        depth = sum(1 for p in parts if _PROCESS.match(p))
        at = next((i for i, p in enumerate(parts) if p.startswith("thread (")), None)
        if at is None or not parts[at].endswith("MainThread") or not count.isdigit():
            continue
        samples.append(Sample("main" if depth == 1 else "pool", parts[at + 1 :], int(count)))
    return samples


def classify(samples: list[Sample], process: str, rules: list[Rule]) -> Counter[str]:
    found: Counter[str] = Counter()
    for sample in samples:
        if sample.process != process:
            continue
        label = next((r.label for r in rules if r.matches(sample.frames)), rules[-1].label)
        found[label] += sample.count
    return found


def leaves(samples: list[Sample], process: str, top: int = 12) -> list[tuple[str, int]]:
    """The most sampled innermost frames, for a look beyond the layers."""
    found: Counter[str] = Counter()
    for sample in samples:
        if sample.process == process and sample.frames:
            found[sample.frames[-1]] += sample.count
    return found.most_common(top)
