"""Printing for the CLI: one JSON document, or plain aligned text with event data escaped."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from workers.safe_text import printable


class CommandError(Exception):
    """A command failed in a way the operator can act on; exit status 1, message on stderr."""


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def print_error(message: str) -> None:
    sys.stderr.write(f"imagegroups: error: {printable(message)}\n")


def print_error_document(message: str, error_type: str) -> None:
    """A `--json` command that failed still prints one JSON document (docs/contract.md §4)."""
    print_json({"error": message, "error_type": error_type})


def print_warning(message: str) -> None:
    sys.stderr.write(f"imagegroups: warning: {printable(message)}\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; None shows as '-'."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [_line(headers, widths), _line(["-" * w for w in widths], widths)]
    lines.extend(_line(row, widths) for row in cells)
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    sys.stdout.write(table(headers, rows) + "\n")


def print_fields(record: Mapping[str, Any]) -> None:
    """One record as `key: value` lines, keys aligned."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        sys.stdout.write(f"{key.ljust(width)}  {_cell(value)}\n")


def _cell(value: Any) -> str:
    """One cell or field, on one line: event data may hold any control character."""
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return printable(json.dumps(value, ensure_ascii=False))
    return printable(str(value))


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
