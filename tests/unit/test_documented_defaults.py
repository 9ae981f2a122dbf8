"""Every default the docs state is the settings object's, and every setting is documented.

The settings tables (a `variable` column and a `default` column) of the README, the contract
and the runbook are read row by row: each row naming an environment variable must give the
default workers.settings.Settings has, and each field of Settings must have a row somewhere.
A setting added later is covered without touching this test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import AliasChoices

from workers.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "contract.md", REPO / "docs" / "runbook.md"]
VARIABLE = re.compile(r"(?:IMAGEGROUPS|CELERY)_[A-Z0-9_]+|DATABASE_URL")
_NAME = re.compile(r"`(_?[A-Z][A-Z0-9_]*)`")
_CELL = re.compile(r"(?<!\\)\|")
# Into seconds; `s` and `ms` after a number are the unit the setting itself is in.
_UNITS = {"s": 1, "ms": 1, "min": 60, "h": 3600, "hour": 3600, "day": 86400, "days": 86400}
_UNSET = re.compile(r"(unset|none|empty|off)\b|[-—]$", re.IGNORECASE)
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*([a-z]+)?")


class Unset:
    """A default documented as `unset…` (or none, empty, off, a dash): no value."""

    def __repr__(self) -> str:
        return "unset"


UNSET = Unset()


@dataclass(frozen=True)
class Row:
    where: str
    variable: str
    default: str | Unset

    def __str__(self) -> str:
        return f"{self.where}: {self.variable} = {self.default!r}"


def _aliases() -> dict[str, str]:
    """Field name by environment variable, for every field of Settings."""
    found = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or name.upper()]
        found.update({str(choice): name for choice in choices})
    return found


ALIASES = _aliases()


def _tables(text: str) -> Iterator[list[list[str]]]:
    """Each Markdown table of `text`, as rows of stripped cells (the header first)."""
    table: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in _CELL.split(line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
        elif table:
            yield table
            table = []


def _variables(cell: str) -> list[str]:
    """`IMAGEGROUPS_OUTBOX_RETENTION` / `_DEAD_LETTER_RETENTION`: a suffix replaces the end of
    the first name, as far as makes a known variable (or the last word, if none)."""
    names = _NAME.findall(cell)
    if not names or not VARIABLE.fullmatch(names[0]):
        return []
    first, found = names[0], [names[0]]
    for suffix in names[1:]:
        words = first.split("_")
        candidates = ["_".join(words[:cut]) + suffix for cut in range(len(words) - 1, 0, -1)]
        found.append(next((c for c in candidates if c in ALIASES), candidates[0]))
    return found


def _values(cell: str, count: int) -> list[str | Unset]:
    if _UNSET.match(cell):
        return [UNSET] * count
    parts = [p.strip() for p in re.split(r"\s+/\s+", cell)]
    if len(parts) == 1:
        parts *= count
    return [_value(part) for part in parts]


def _value(part: str) -> str | Unset:
    """The literal in backquotes (a unit after it applied), else a number with its unit."""
    if _UNSET.match(part):
        return UNSET
    quoted = re.match(r"`([^`]*)`\s*([a-z]+)?", part)
    text = f"{quoted.group(1)} {quoted.group(2) or ''}".strip() if quoted else part
    number = _NUMBER.fullmatch(text)
    if number and (number.group(2) or "") in (*_UNITS, ""):
        return repr(float(number.group(1)) * _UNITS.get(number.group(2) or "s", 1))
    return text


def documented() -> list[Row]:
    rows = []
    for path in DOCS:
        where = path.relative_to(REPO).as_posix()
        for header, *body in _tables(path.read_text(encoding="utf-8")):
            lowered = [h.lower() for h in header]
            if "variable" not in lowered or "default" not in lowered:
                continue
            at, column = lowered.index("variable"), lowered.index("default")
            for cells in body:
                variables = _variables(cells[at])
                values = _values(cells[column], len(variables))
                assert len(values) == len(variables), f"{where}: cannot pair {cells}"
                rows += [Row(where, v, d) for v, d in zip(variables, values, strict=True)]
    return rows


def _actual(variable: str) -> str | Unset:
    field = Settings.model_fields[ALIASES[variable]]
    value = field.get_default(call_default_factory=True)
    if value is None or (isinstance(value, str | frozenset | set | list | tuple) and not value):
        return UNSET
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value)


ROWS = documented()


def test_the_settings_tables_are_found_in_each_document() -> None:
    assert {row.where for row in ROWS} == {p.relative_to(REPO).as_posix() for p in DOCS}
    assert len(ROWS) >= len(ALIASES)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.where}:{r.variable}" for r in ROWS])
def test_every_documented_default_is_the_settings_default(row: Row) -> None:
    assert row.variable in ALIASES, f"{row}: no such setting in workers/settings.py"
    assert row.default == _actual(row.variable), f"{row}, but the code says {_actual(row.variable)}"


def test_every_setting_is_documented_with_its_default() -> None:
    assert sorted(set(ALIASES) - {row.variable for row in ROWS}) == []


@pytest.mark.parametrize(
    ("cell", "count", "values"),
    [
        ("`8`", 1, [repr(8.0)]),
        ("`3600` / `1800` / `3600`", 3, [repr(3600.0), repr(1800.0), repr(3600.0)]),
        ("`5` / `10` s", 2, [repr(5.0), repr(10.0)]),
        ("1 day / 30 days", 2, [repr(86400.0), repr(2592000.0)]),
        ("`604800` (7 days)", 1, [repr(604800.0)]),
        ("unset: off", 1, [UNSET]),
        ("none", 1, [UNSET]),
        ("`300` ms", 1, [repr(300.0)]),
        ("`sqlite:///imagegroups.db`", 1, ["sqlite:///imagegroups.db"]),
        ("`read-only`", 1, ["read-only"]),
    ],
)
def test_a_default_cell_is_read_as_written(
    cell: str, count: int, values: list[str | Unset]
) -> None:
    assert _values(cell, count) == values


def test_a_suffix_names_the_variable_it_completes() -> None:
    cell = "`IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL` / `_GRACE`"
    assert _variables(cell) == [
        "IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL",
        "IMAGEGROUPS_OUTBOX_SWEEP_GRACE",
    ]
    assert _variables("`IMAGEGROUPS_OUTBOX_RETENTION` / `_DEAD_LETTER_RETENTION`")[1] == (
        "IMAGEGROUPS_DEAD_LETTER_RETENTION"
    )
    assert _variables("`imagegroups_events_total`") == []
