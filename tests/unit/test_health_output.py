"""`imagegroups health` prints what workers answered: a forged reply cannot drive the terminal."""

from __future__ import annotations

import pytest

from workers.cli.health import _print_human


def test_a_problem_line_from_a_forged_worker_reply_is_printed_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    forged = "worker w1@\x1b[2Jhost cannot reach\rhealthy\n  - none"
    document = {
        "database": {"ok": True, "error": None},
        "broker": {"ok": True, "error": None},
        "queues": {},
        "outbox": {"pending": 0, "oldest_unsent_age_seconds": None},
        "dead_letters": {"waiting": 0},
        "workers": [],
        "healthy": False,
        "problems": [forged],
    }
    _print_human(document)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "  - worker w1@\\x1b[2Jhost cannot reach\\rhealthy\\n  - none" in out
    assert out.count("\n  - ") == 1
