"""Runs the demo inside a network namespace of its own and says what it touched, as JSON.

Started by tests/e2e/test_demo.py as `unshare -n sh -c 'ip link set lo up && exec python -m
tests.e2e.offline ...'`: only loopback exists, and with `--redis` a private redis-server
listens on 127.0.0.1:6379, the demo's old default, so a demo that still reached for Redis
would find one and show in its counters. Each run watches its own sockets with an audit hook.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

REDIS_PORT = 6379
PR_SET_PDEATHSIG = 1
#: The demo under an audit hook that reports every network socket, bind, connect and lookup.
WATCHED_DEMO = """
import faulthandler, signal, socket, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung run's threads, for its report
def watch(event, args):
    if event == "socket.__new__" and args[1] != socket.AF_UNIX:
        print(f"network: socket family={args[1]}", file=sys.stderr, flush=True)
    elif event in ("socket.bind", "socket.connect") and not isinstance(args[1], (str, bytes)):
        print(f"network: {event} {args[1]}", file=sys.stderr, flush=True)
    elif event == "socket.getaddrinfo":
        print(f"network: getaddrinfo {args[0]}", file=sys.stderr, flush=True)
sys.addaudithook(watch)
from workers.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _die_with_parent() -> None:
    # The server lives in this namespace only: it goes when the driver goes, even if killed.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def private_redis(data: Path) -> Iterator[redis.Redis]:
    argv = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(data)]
    server = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )
    client = redis.Redis(port=REDIS_PORT)
    try:
        deadline = time.monotonic() + 20
        while not _answers(client):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("offline: the private redis-server did not answer")
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        server.kill()
        server.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def counters(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("stats")
    return {k: int(info[k]) for k in ("total_connections_received", "total_commands_processed")}


def run_demo(groups: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """One demo run; one still running after `timeout` is reported with its threads' stacks."""
    argv = [sys.executable, "-c", WATCHED_DEMO, "demo", "--groups", str(groups)]
    started = time.monotonic()
    demo = subprocess.Popen(
        argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = demo.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGUSR1)
        time.sleep(1.0)  # faulthandler writes the stacks at once; a second is plenty
        demo.kill()
        out, err = demo.communicate()
        return {"returncode": None, "seconds": timeout, "stdout": out, "stderr": f"(hung)\n{err}"}
    seconds = round(time.monotonic() - started, 2)
    return {"returncode": demo.returncode, "seconds": seconds, "stdout": out, "stderr": err}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.gettempdir())
    report: dict[str, Any] = {}
    with _maybe_redis(args.redis, workdir) as client:
        if client is not None:
            # The counters' own cost, measured: one INFO between two readings.
            first = counters(client)
            report["baseline"] = [first, counters(client)]
        report["runs"] = [run_demo(args.groups, args.timeout, workdir) for _ in range(args.runs)]
        if client is not None:
            report["after"] = counters(client)
    print(json.dumps(report))


@contextmanager
def _maybe_redis(wanted: bool, workdir: Path) -> Iterator[redis.Redis | None]:
    if not wanted:
        yield None
        return
    data = Path(tempfile.mkdtemp(prefix="offline-redis-", dir=workdir))
    with private_redis(data) as client:
        yield client


if __name__ == "__main__":
    main()
