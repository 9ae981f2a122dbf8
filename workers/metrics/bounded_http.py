"""An HTTP server whose idle and slow clients cost a bounded number of sockets and threads.

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
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

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
