"""The machine a run measured: cores, CPU model, memory, and the servers' versions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from tests.pg import base_url


def _proc_field(path: str, name: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return "?"


def _postgres_version() -> str:
    engine = create_engine(base_url())
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    except Exception as exc:
        return f"? ({type(exc).__name__})"
    finally:
        engine.dispose()


def machine(client: redis.Redis) -> dict[str, Any]:
    """What the report names the machine by; '?' for what could not be read."""
    kib = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cores": os.cpu_count(),
        "cpu": _proc_field("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(kib) / 2**20, 1) if kib.isdigit() else None,
        "postgresql": _postgres_version(),
        "redis": str(client.info("server").get("redis_version", "?")),
    }


def describe(m: dict[str, Any]) -> str:
    return (
        f"machine: {m['nproc']} of {m['cores']} cores usable, {m['cpu']}, "
        f"{m['memory_gib']} GiB memory; PostgreSQL {m['postgresql']}, Redis {m['redis']}"
    )
