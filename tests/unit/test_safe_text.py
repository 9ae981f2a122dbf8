"""Event text shown to an operator or logged cannot drive a terminal or forge a line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from workers.safe_text import (
    EscapeControlCharacters,
    escape_handlers,
    one_line,
    printable,
    printable_block,
)

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "boom\x1b[2J\x07\r\nstatus          PASSED\x9b\u202egnp.\x7f\ttab\x00"
RAW = ["\x1b", "\x07", "\r", "\x9b", "\u202e", "\x7f", "\x00", "\t"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("bell\x07 del\x7f nul\x00", "bell\\x07 del\\x7f nul\\x00"),
        ("csi\x9b1m", "csi\\x9b1m"),
        ("abc\u202edef\u2066x\u2069\u200f", "abc\\u202edef\\u2066x\\u2069\\u200f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("plain café ✓ C:\\path", "plain café ✓ C:\\path"),
    ],
    ids=["esc", "line-breaks", "c0-and-del", "c1", "bidi", "line-separator", "untouched"],
)
def test_printable_shows_each_control_character_as_its_escape(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_escaping_twice_changes_nothing() -> None:
    once = printable(HOSTILE)

    assert printable(once) == once
    assert not any(char in once for char in [*RAW, "\n"])


def test_a_block_keeps_its_line_breaks_and_escapes_the_rest() -> None:
    shown = printable_block("Traceback:\n  raise X('\x1b[2J')\r\nX: \x07")

    assert shown.split("\n") == ["Traceback:", "  raise X('\\x1b[2J')\\r", "X: \\x07"]


def test_one_line_cuts_the_escaped_text_with_an_ellipsis() -> None:
    assert one_line("abc\x1bdef", 6) == "abc\\x…"
    assert one_line("short", 6) == "short"


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers, logger.propagate = [handler], False
    escape_handlers(logger)
    escape_handlers(logger)  # once is enough: the filter is not added twice
    return logger, stream


def test_the_log_filter_escapes_the_message_and_the_traceback_text() -> None:
    logger, stream = _logger("tests.safe_text.filter")

    try:
        raise ValueError(f"bad summary {HOSTILE}")
    except ValueError:
        logger.exception("event_id=%s failed: %s", "e-1", HOSTILE)

    out = stream.getvalue()
    first, *trace = out.rstrip("\n").split("\n")
    assert first == f"ERROR event_id=e-1 failed: {printable(HOSTILE)}"
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == f"ValueError: bad summary {printable(HOSTILE)}"
    assert not any(char in out for char in RAW)
    assert [len(h.filters) for h in logger.handlers] == [1]
    assert all(isinstance(f, EscapeControlCharacters) for f in logger.handlers[0].filters)


def test_a_chained_exception_message_cannot_break_the_traceback_into_forged_lines() -> None:
    logger, stream = _logger("tests.safe_text.chained")

    try:
        try:
            raise KeyError(HOSTILE)
        except KeyError as inner:
            raise RuntimeError("outer\nINFO forged line") from inner
    except RuntimeError:
        logger.exception("handling failed")

    lines = stream.getvalue().splitlines()
    assert not any(line.startswith(("INFO forged", "status ")) for line in lines), lines
    assert "RuntimeError: outer\\nINFO forged line" in lines
    assert not any(char in stream.getvalue() for char in RAW)


def test_the_worker_logging_celery_sets_up_escapes_every_line() -> None:
    """The worker's own logging (Celery's `app.log.setup`, as `celery worker` calls it) gets
    the filter through the after_setup_logger and after_setup_task_logger signals."""
    code = (
        "import logging\nfrom workers.celery import app\n"
        "app.log.setup(loglevel='INFO')\n"
        f"logging.getLogger('workers.edge.task').warning('summary: %s', {HOSTILE!r})\n"
        f"logging.getLogger('celery.task').warning('task: %s', {HOSTILE!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "summary:" in line or "task:" in line]
    assert len(lines) == 2, done.stderr
    assert all(line.endswith(printable(HOSTILE)) for line in lines), lines
    assert not any(char in done.stderr for char in RAW)
