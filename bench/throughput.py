"""Throughput of the worker against bare Celery no-op tasks, same broker and worker count.

    .venv/bin/python bench/throughput.py --events 2000 --concurrency 2

Each run pre-loads a queue, starts the worker, and times the drain from the first message
taken to the last one finished (Redis list empty and nothing unacked).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from persistence.migrate import upgrade  # noqa: E402
from workers import publishing  # noqa: E402

BROKER_DB = 14
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _client(broker: str) -> Celery:
    client = Celery("bench-client", broker=broker)
    client.conf.update(task_serializer="json", accept_content=["json"])
    return client


def _drain_rate(r: redis.Redis, queue: str, total: int, proc: subprocess.Popen[bytes]) -> float:
    start = None
    while True:
        waiting = r.llen(queue)
        if start is None and waiting < total:
            start = time.perf_counter()
        if start is not None and waiting == 0 and r.hlen("unacked") == 0:
            return total / (time.perf_counter() - start)
        if proc.poll() is not None:
            raise SystemExit(f"worker exited early ({proc.returncode})")
        time.sleep(0.002)


def _run(argv: list[str], env: dict[str, str], r: redis.Redis, queue: str, n: int) -> float:
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        return _drain_rate(r, queue, n, proc)
    finally:
        proc.terminate()
        proc.wait(30)


def bare(n: int, concurrency: int, broker: str, r: redis.Redis) -> float:
    r.flushdb()
    client = _client(broker)
    for _ in range(n):
        client.send_task("bench.noop", kwargs={"event": {}}, queue="noop")
    argv = [
        "celery",
        "-A",
        "bench.noop_app",
        "worker",
        "-c",
        str(concurrency),
        "-l",
        "WARNING",
        "--without-mingle",
        "--without-gossip",
        "-Q",
        "noop",
    ]
    return _run(argv, {**os.environ, "CELERY_BROKER_URL": broker}, r, "noop", n)


def ours(n: int, concurrency: int, broker: str, r: redis.Redis, phase: str) -> float:
    name = f"ig_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG}/{name}"
    try:
        upgrade(url)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": broker,
            "CELERY_RESULT_BACKEND": broker.rsplit("/", 1)[0] + f"/{BROKER_DB + 1}",
        }
        argv = [
            "celery",
            "-A",
            "workers",
            "worker",
            "-l",
            "WARNING",
            "-c",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
        ]
        jobs = [(str(uuid.uuid4()), f"bench-{i}") for i in range(n)]
        client = _client(broker)
        rates = {}
        for step in ("catalog", "build"):
            r.flushdb()
            for job, group in jobs:
                event: dict[str, Any] = (
                    publishing.catalog_parsed(job, group, ["compute", "login"])
                    if step == "catalog"
                    else publishing.stage_finished(job, "build-image", "succeeded")
                )
                publishing.send(client, event)
            rates[step] = _run(argv, env, r, "imagegroups.events", n)
        return rates[phase]
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    broker = f"redis://127.0.0.1:6379/{BROKER_DB}"
    r = redis.Redis.from_url(broker)
    base = bare(args.events, args.concurrency, broker, r)
    catalog = ours(args.events, args.concurrency, broker, r, "catalog")
    build = ours(args.events, args.concurrency, broker, r, "build")
    print(f"bare celery no-op : {base:8.0f} tasks/s")
    print(f"catalog.parsed    : {catalog:8.0f} events/s  ratio {catalog / base:.2f}")
    print(
        f"build -> DEPLOYING: {build:8.0f} events/s  ratio {build / base:.2f}  "
        "(group + images + history + outbox + follow-on publish)"
    )


if __name__ == "__main__":
    main()
