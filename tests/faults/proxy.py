"""A TCP proxy for fault tests that can black-hole: bytes stop, every socket stays open.

Each proxy listens on a loopback address no one else uses (127.66.N.1) and reaches the server
from 127.0.0.1 (the address PostgreSQL's pg_hba.conf trusts). Two kinds of black hole:
- in user space (`black_hole()`): the proxy stops forwarding and holds what it read. Both
  kernels still acknowledge every segment, so neither end's TCP notices anything: only
  timeouts above TCP (a connect timeout, a probe's deadline, a time limit) can;
- in the kernel (`black_hole(kernel=True)`): an nftables table of the proxy's own drops every
  packet to or from its address, and those of its connections to the server (by their local
  ports), as they arrive, as a cut cable or a dead router would. Now
  the ends' TCP timers run: keepalive probes and retransmissions go unanswered, and
  `tcp_user_timeout` and keepalives can end the connection on either side.
`heal()` forwards again (what was held goes through: a short partition TCP survives).
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
from collections.abc import Iterator

from sqlalchemy.engine import make_url


class Proxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.net = random.randint(1, 254)
        self.host = f"127.66.{self.net}.1"
        self.table = f"ig_black_hole_{self.net}"
        self._listener = socket.create_server((self.host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._upstream: list[socket.socket] = []
        self._lock = threading.Lock()
        self.kernel = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url_for(self, database_url: str) -> str:
        """The same database, reached through this proxy."""
        url = make_url(database_url).set(host=self.host, port=self.port)
        return url.render_as_string(hide_password=False)

    def black_hole(self, *, kernel: bool = False) -> None:
        self._flowing.clear()
        if kernel and not self.kernel:
            chain = f"ip {self.table} input"
            rules = [
                f"add table ip {self.table}",
                f"add chain {chain} {{ type filter hook input priority -10 ; }}",
                f"add rule {chain} ip saddr {self.host} drop",
                f"add rule {chain} ip daddr {self.host} drop",
            ]
            ports = ", ".join(str(port) for port in self._upstream_ports())
            if ports:
                server = self.upstream[1]
                rules += [
                    f"add rule {chain} ip saddr 127.0.0.1 tcp sport {{ {ports} }} "
                    f"tcp dport {server} drop",
                    f"add rule {chain} ip daddr 127.0.0.1 tcp sport {server} "
                    f"tcp dport {{ {ports} }} drop",
                ]
            _nft(*rules)
            self.kernel = True

    def heal(self) -> None:
        if self.kernel:
            _nft(f"delete table ip {self.table}")
            self.kernel = False
        self._flowing.set()

    def _upstream_ports(self) -> list[int]:
        with self._lock:
            sockets = list(self._upstream)
        ports = []
        for sock in sockets:
            with contextlib.suppress(OSError):
                ports.append(int(sock.getsockname()[1]))
        return ports

    def close(self) -> None:
        self.heal()
        self._closed = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                if self._closed:
                    return
                continue
            with self._lock:
                self._sockets += [client, server]
                self._upstream.append(server)
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()  # black-holed: hold the bytes, read no more
                if self._closed:
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _nft(*commands: str) -> None:
    subprocess.run(["nft", "; ".join(commands)], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def proxy_to(database_url: str) -> Iterator[Proxy]:
    """A proxy in front of the PostgreSQL server of `database_url`."""
    url = make_url(database_url)
    running = Proxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield running
    finally:
        running.close()
