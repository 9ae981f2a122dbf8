"""The worker's /metrics endpoint: the pool processes' counts, and gauges read at scrape time.

Served by a thread of the worker's main process, on a server whose idle or slow clients
cost a bounded number of sockets and threads (workers/metrics/bounded_http.py). The counters and
histograms come from the files every process of this worker writes (prometheus_client's
MultiProcessCollector sums them); the outbox backlog, the groups per status and the overdue
groups are read from the database when Prometheus asks, so they are never stale and cost
nothing between scrapes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from domain import ImageGroupStatus
from persistence.gauges import snapshot
from workers.metrics.bounded_http import BoundedHTTPServer
from workers.metrics.recorder import Counting

log = logging.getLogger(__name__)
_LIVE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db$")
# A scrape sends its request at once and takes milliseconds; Prometheus scrapes one target
# with one connection at a time. What is beyond these limits is closed, never queued.
IDLE_TIMEOUT = 5.0
MAX_WAITING = 32
MAX_HANDLERS = 4


class Source(Protocol):
    """Where the scrape-time gauges are read (the process's runtime)."""

    @property
    def engine(self) -> Engine: ...

    def now(self) -> datetime: ...


class DatabaseCollector:
    """Gauges computed from the database at scrape time (a custom collector)."""

    def __init__(self, runtime: Callable[[], Source]) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "imagegroups_database_up", "Whether the scrape could read the database (1) or not"
        )
        rt = self.runtime()
        try:
            now = rt.now()
            seen = snapshot(rt.engine, now)
        except Exception:
            log.warning("metrics: could not read the database", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "imagegroups_outbox_unsent", "Follow-on events not yet sent", value=seen.outbox_unsent
        )
        oldest = seen.oldest_unsent_at
        age = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "imagegroups_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unsent follow-on event (0 when none waits)",
            value=age,
        )
        groups = GaugeMetricFamily(
            "imagegroups_groups", "Image groups by status", labels=["status"]
        )
        for status in ImageGroupStatus:
            groups.add_metric([status.value], seen.groups_by_status.get(status.value, 0))
        yield groups
        yield GaugeMetricFamily(
            "imagegroups_groups_overdue",
            "Groups whose requested stage is past its deadline (the sweep has yet to fail them)",
            value=seen.overdue_groups,
        )


def reap_dead_processes(directory: Path, counting: Counting) -> list[int]:
    """mark_process_dead for every process whose live gauges are there but that is gone: a
    pool process killed without its shutdown signal (kill -9, the time limit)."""
    dead = []
    for path in directory.iterdir():
        found = _LIVE_FILE.match(path.name)
        if found and not _alive(int(found.group(1))):
            dead.append(int(found.group(1)))
    for pid in dead:
        counting.process_exited(pid)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child the pool has not reaped yet is a zombie: dead all the same
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class MetricsServer:
    """An HTTP server on (address, port) answering GET /metrics; bound when built."""

    def __init__(self, address: str, port: int, runtime: Callable[[], Source]) -> None:
        self._httpd = BoundedHTTPServer(
            (address, port),
            _handler(self),
            idle_timeout=IDLE_TIMEOUT,
            max_waiting=MAX_WAITING,
            max_handlers=MAX_HANDLERS,
        )
        self.address: tuple[str, int] = (address, int(self._httpd.server_address[1]))
        self.runtime = runtime
        # One scrape at a time: reaping a dead process's files while another scrape reads
        # the directory would make that one fail on a file that just went away.
        self._scraping = threading.Lock()
        self._thread = threading.Thread(target=self._httpd.serve, name="metrics-http", daemon=True)

    def start(self, counting: Counting) -> None:
        """Serve the counts of `counting`, which is enabled (its directory set)."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        if counting.directory is None:
            raise ValueError("metrics are served only once counting is enabled")
        directory = self.directory = counting.directory
        self.counting = counting
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]
        self.registry.register(DatabaseCollector(self.runtime))
        self._thread.start()

    def page(self) -> bytes:
        from prometheus_client import generate_latest

        with self._scraping:
            reap_dead_processes(self.directory, self.counting)
            return generate_latest(self.registry)

    def stop(self) -> None:
        self._httpd.stop()


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = server.page()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler
