"""Private Redis and PostgreSQL servers on free ports, for tests that crash and restart them."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.integration.stack import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server with an append-only file, as docker-compose.yml runs it."""

    port: int
    data: Path
    fsync: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
            "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        log = (self.data / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _answers(client), timeout=30, what="redis-server to answer")
        client.close()

    def kill(self) -> None:
        """kill -9: no shutdown, no final save; what survives is what the AOF had."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def kill_and_start(self) -> None:
        """A crash and a restart from the AOF, on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@contextmanager
def private_redis(tmp: Path, fsync: str = "everysec") -> Iterator[RedisServer]:
    data = tmp / f"redis-{fsync}"
    data.mkdir()
    server = RedisServer(free_port(), data, fsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own (initdb), so a test can restart it under the worker."""

    port: int
    data: Path
    bin: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        argv = [str(self.bin / "pg_ctl"), "-D", str(self.data / "db"), "-w", *args]
        subprocess.run(_as_postgres(argv), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self.ctl("-o", options, "-l", str(self.data / "postgres.log"), "start")

    def restart(self, mode: str = "fast") -> None:
        """Stop (terminating every session) and start again, as an operator or a failover would."""
        self.ctl("-m", mode, "stop")
        self.start()


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    [bin_dir] = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:]
    data = Path(tempfile.mkdtemp(prefix="ig-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    server = PostgresServer(free_port(), data, Path(bin_dir))
    initdb = [str(server.bin / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust"]
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
    server.start()
    try:
        yield server
    finally:
        try:
            server.ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(data, ignore_errors=True)
