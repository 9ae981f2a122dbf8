"""A worker whose fetch or leases are not engaged refuses to start, with one line.

Each case starts the real worker command in a process that first breaks one hook the way a
kombu or Celery upgrade could (a wrapper given to `python -c`), and sees it exit with status
1 and `imagegroups worker: cannot start: <reason>` before it ever says it is ready.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.integration.stack import WORKER, Stack, stack, wait_for

#: Run the worker command after `patch` (Python source) has run in the same process.
WRAPPER = """
import sys
{patch}
from celery.__main__ import main
sys.argv = {argv!r}
main()
"""

BREAKS = {
    "kombu's poller starts reads without _brpop_start": (
        "from kombu.transport import redis as r\n"
        "def _register(self, channel):\n"
        "    channel._in_poll = True\n"
        "r.MultiChannelPoller._register_BRPOP = _register\n",
        "kombu's Redis poller no longer starts a read with _brpop_start",
    ),
    "kombu's own transport for Redis": (
        "import workers.broker.transport as t\nt.transport_for = lambda url: None\n",
        "the Redis broker runs on kombu.transport.redis.Transport, not "
        "workers.broker.transport:Transport",
    ),
    "the lease timer never registered": (
        "from kombu.transport import redis as r\n"
        "import workers.broker.transport as t\n"
        "t.Transport.register_with_event_loop = r.Transport.register_with_event_loop\n",
        "leases would not be renewed",
    ),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("engaged"), "engaged") as running:
        yield running


@pytest.mark.parametrize("broken", list(BREAKS))
def test_a_worker_with_a_hook_not_engaged_exits_1_with_the_reason(
    servers: Stack, broken: str
) -> None:
    patch, reason = BREAKS[broken]
    code = WRAPPER.format(patch=patch, argv=[*WORKER, "--concurrency", "1"])
    worker = servers.spawn([sys.executable, "-c", code], name=broken.replace(" ", "-"))
    wait_for(lambda: worker.popen.poll() is not None, timeout=30, what="the worker to stop")
    output = worker.output()
    assert worker.popen.returncode == 1, output
    [line] = [text for text in output.splitlines() if "imagegroups worker: cannot start: " in text]
    assert reason in line, line
    assert "ready." not in output
