"""The worker's /metrics endpoint, on a small bounded HTTP server.

The worker's /metrics endpoint: the pool processes' counts, and gauges read at scrape time.

Served by a thread of the worker's main process, on a server whose idle or slow clients
cost a bounded number of sockets and threads (workers/runtime/metrics_http.py). The counters and
histograms come from the files every process of this worker writes (prometheus_client's
MultiProcessCollector sums them); the outbox backlog, the groups per status and the overdue
groups are read from the database when Prometheus asks, so they are never stale and cost
nothing between scrapes.

An HTTP server whose idle and slow clients cost a bounded number of sockets and threads.

http.server's ThreadingHTTPServer starts a thread per connection and waits on it without end:
a thousand idle connections cost a thousand threads and descriptors, and the process runs
out of both. Here a connection waits for its request in one selector (a descriptor, no
thread). When too many wait, the oldest is closed, so a new client (a scrape sends its
request at once) always gets in; one still silent after `idle_timeout` is closed. A
connection whose request has arrived is served by one of `max_handlers` threads, each read
bounded by `idle_timeout`; when all are busy it is closed at once, never queued.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from domain import ImageGroupStatus
from persistence.gauges import snapshot
from workers.runtime.root import Counting

log = logging.getLogger(__name__)

_TICK = 0.25  # how often the loop looks for expired connections and a stop request


class BoundedHTTPServer(HTTPServer):
    # Connections the kernel may hold before they are accepted (no descriptor of ours yet):
    # enough that a burst is not dropped while the loop takes them one by one.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        idle_timeout: float,
        max_waiting: int,
        max_handlers: int,
    ) -> None:
        super().__init__(address, handler)
        self.idle_timeout = idle_timeout
        self.max_waiting = max_waiting
        self._slots = threading.BoundedSemaphore(max_handlers)
        # Accept order is deadline order: the first entry is the oldest and expires first.
        self._waiting: dict[socket.socket, tuple[float, Any]] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve(self) -> None:
        """Accept, wait for requests and hand them to handler threads until stop()."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(timeout=_TICK):
                        if key.fileobj is self.socket:
                            self._accept(selector)
                        else:
                            self._dispatch(selector, key.fileobj)  # type: ignore[arg-type]
                    self._expire(selector, time.monotonic())
            finally:
                for conn in list(self._waiting):
                    self._drop(selector, conn)
                self._stopped.set()

    def stop(self) -> None:
        self._stopping.set()
        self._stopped.wait(5 * _TICK + 1)
        self.server_close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            conn, peer = self.socket.accept()
        except OSError as exc:
            # Out of descriptors, say: free one of ours, and do not spin on a socket that
            # stays readable.
            log.warning("metrics endpoint cannot accept a connection: %s", exc)
            if self._waiting:
                self._drop(selector, next(iter(self._waiting)))
            self._stopping.wait(_TICK)
            return
        if len(self._waiting) >= self.max_waiting:
            self._drop(selector, next(iter(self._waiting)))
        self._waiting[conn] = (time.monotonic() + self.idle_timeout, peer)
        selector.register(conn, selectors.EVENT_READ)

    def _dispatch(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        _, peer = self._waiting.pop(conn)
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(conn)
            return
        threading.Thread(
            target=self._serve_one, args=(conn, peer), name="metrics-http-request", daemon=True
        ).start()

    def _serve_one(self, conn: socket.socket, peer: Any) -> None:
        try:
            conn.settimeout(self.idle_timeout)  # every read and write of the request
            self.finish_request(conn, peer)
        except Exception:
            log.debug("metrics request from %s failed", peer, exc_info=True)
        finally:
            self.shutdown_request(conn)
            self._slots.release()

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        while self._waiting:
            conn, (deadline, _) = next(iter(self._waiting.items()))
            if deadline > now:
                return
            self._drop(selector, conn)

    def _drop(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        selector.unregister(conn)
        del self._waiting[conn]
        self.shutdown_request(conn)


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


__all__: list[str] = []
