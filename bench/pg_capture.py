"""The SQL the worker's handlers send for one catalog.parsed and one build result, captured.

    python bench/pg_capture.py EVENTS.json OUT.json    # DATABASE_URL: a migrated database

Unlike the rest of the bench, this script imports the product, for capture only: it runs the
worker's own event path in process (the envelope parsed into a command, the handler on the
runtime a pool process builds, `workers/runtime/root.py`) and records every statement psycopg is
handed, with its parameters as bound. bench/pg_limit.py runs it in a subprocess on the checkout
under test and replays what it wrote without the product. Publishing the follow-ons (after the
commit, outside the transaction) is not run; the outbox row they come from is captured.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

if sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
    del sys.path[0]  # run as a script: bench's modules must not shadow anything

from sqlalchemy import event


def tagged(value: Any) -> Any:
    """A bound parameter as JSON: plain values as they are, others tagged with their type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, list | tuple):
        return {"$list": [tagged(v) for v in value]}
    if isinstance(value, dict):
        return {"$dict": {k: tagged(v) for k, v in value.items()}}
    wrapped = getattr(value, "obj", None)  # psycopg's Json / Jsonb wrappers
    if type(value).__name__ in ("Json", "Jsonb"):
        return {f"${type(value).__name__.lower()}": wrapped}
    raise TypeError(f"cannot record a parameter of type {type(value).__name__}: {value!r}")


def capture(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each event through the worker's path; the statements of each, in order."""
    from workers.edge.accept import CatalogParsedEvent, StageFinishedEvent, parse
    from workers.handlers import handle_catalog_parsed, handle_stage_finished
    from workers.runtime import root

    rt = root.runtime()
    with rt.engine.connect():
        pass  # the dialect's first-connect queries happen here, not in an event
    recorded: list[dict[str, Any]] = []

    def record(*args: Any) -> None:
        _conn, _cursor, statement, parameters, _context, many = args
        rows = parameters if many else [parameters]
        for row in rows:
            recorded.append({"sql": statement, "params": tagged(row)})

    event.listen(rt.engine, "before_cursor_execute", record)
    out: list[list[dict[str, Any]]] = []
    for envelope in events:
        if envelope["event_type"] == "catalog.parsed":
            command: Any = parse(CatalogParsedEvent, (), {"event": envelope}).to_command()
            result = handle_catalog_parsed(command, deps=rt.deps)
        else:
            command = parse(StageFinishedEvent, (), {"event": envelope}).to_command()
            result = handle_stage_finished(command, deps=rt.deps)
        if result.outcome.outcome.value != "applied":
            raise RuntimeError(f"{envelope['event_type']}: {result.outcome}")
        out.append(recorded.copy())
        recorded.clear()
    rt.engine.dispose()
    return out


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    events = json.loads(source.read_text())
    target.write_text(json.dumps(capture(events), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
