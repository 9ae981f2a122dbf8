"""Text from events shown to an operator: control characters escaped, so no message can move the
cursor, clear the screen, forge a line or reorder what is printed (ESC, BEL, CR, bidi overrides).

Only human output and log lines are escaped; JSON documents stay exact (JSON escapes them).
A backslash is kept as it is, so escaping twice changes nothing and paths stay readable.
"""

from __future__ import annotations

import logging
import re
import traceback

#: C0 controls, DEL, C1 controls, and the Unicode bidi embeddings, overrides and isolates
#: (U+202A to U+202E, U+2066 to U+2069) plus the marks that steer them (U+200E, U+200F, U+061C),
#: and the line and paragraph separators (U+2028, U+2029) that some terminals break on.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """One line: every control character as its escape (`\\x1b`, `\\n`, `\\u202e`)."""
    return _CONTROL.sub(_escape, text)


def printable_block(text: str) -> str:
    """Several lines (a traceback, a body): the line breaks kept, everything else escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def one_line(text: str, width: int) -> str:
    """`printable`, cut to `width` characters with an ellipsis (a table column)."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def traceback_text(exc: BaseException) -> str:
    """A traceback whose exception messages (the event's text, often) stay one line each, so
    only the traceback's own line breaks remain; the rest is escaped as a block."""
    summary = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending = [summary]
    while pending:  # the exception and every one chained to it (cause, context)
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # `_str` is the message format_exception_only prints (CPython 3.11 to 3.13);
        # tests/unit/test_safe_text.py fails if a message line break gets through again.
        current._str = printable(str(current._str))  # type: ignore[attr-defined]
        pending.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return printable_block("".join(summary.format()).rstrip("\n"))


class EscapeControlCharacters(logging.Filter):
    """A handler filter: the rendered message as one line, the traceback with its line breaks
    only, so a message cannot forge log lines or send terminal sequences.

    It rewrites the record (message rendered, args dropped), which every later handler sees:
    escaping is idempotent, so a record passing two such handlers is escaped once."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = printable(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = traceback_text(record.exc_info[1])
        if record.exc_text:
            record.exc_text = printable_block(record.exc_text)
        if record.stack_info:
            record.stack_info = printable_block(record.stack_info)
        return True


def escape_handlers(logger: logging.Logger) -> None:
    """Add the filter to each of the logger's handlers (once): a handler filter sees the
    records of every child logger too, where a logger filter would not."""
    for handler in logger.handlers:
        if not any(isinstance(f, EscapeControlCharacters) for f in handler.filters):
            handler.addFilter(EscapeControlCharacters())
