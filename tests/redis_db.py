"""Redis databases for tests, leased with a file lock so concurrent sessions never share one."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

REDIS_HOST = os.environ.get("IMAGEGROUPS_TEST_REDIS", "127.0.0.1:6379")
#: Database 0 and 1 are the documented defaults a developer's own worker may use.
LEASABLE = range(2, 16)
_LOCKS = Path(tempfile.gettempdir()) / "imagegroups-test-redis"


@contextmanager
def lease_redis_db(timeout: float = 120.0) -> Iterator[str]:
    """Yield `redis://host/N` for a database no other test (in any process) holds; flushed."""
    _LOCKS.mkdir(exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for number in LEASABLE:
            handle = (_LOCKS / f"db{number}.lock").open("w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            url = f"redis://{REDIS_HOST}/{number}"
            client = redis.Redis.from_url(url)
            try:
                client.flushdb()
                yield url
            finally:
                try:
                    client.flushdb()
                finally:
                    client.close()
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    handle.close()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free Redis test database in {timeout}s")
        time.sleep(0.2)
