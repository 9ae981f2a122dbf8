"""Bulk-fill a migrated database with a long-running deployment's history, in SQL.

Rows are shaped like the worker's own (persistence/models.py, the Alembic revisions): the inbox
(processed_events), the outbox (every row sent), transition_history, event_deliveries and
dead_letters get `rows` rows each; image_groups gets one group per eight transitions (the
history's foreign key needs them), each having gone BUILT → … → PASSED → CLEANED.
"""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text

#: Seconds back from now for row i of n: oldest first, one row a second.
_AT = "now() - make_interval(secs => :rows - i)"
_UUID = "gen_random_uuid()::text"
_PATH = "'BUILT','DEPLOYING','DEPLOYED','RESTARTING','RESTARTED','VALIDATING','PASSED'"

GROUPS = f"""
INSERT INTO image_groups (id, job_id, status, attempt, created_at, updated_at)
SELECT 'old-' || g, {_UUID}, 'CLEANED', 1,
       now() - make_interval(secs => :rows - g * 8),
       now() - make_interval(secs => :rows - g * 8 - 7)
FROM generate_series(0, :groups - 1) AS g
"""

HISTORY = f"""
INSERT INTO transition_history (image_group_id, from_status, to_status, event_id, at)
SELECT 'old-' || (i / 8), (ARRAY[NULL, {_PATH}])[i % 8 + 1], (ARRAY[{_PATH}, 'CLEANED'])[i % 8 + 1],
       {_UUID}, {_AT}
FROM generate_series(0, :rows - 1) AS i
"""

INBOX = f"""
INSERT INTO processed_events (event_id, task_name, outcome, processed_at)
SELECT {_UUID},
       CASE WHEN i % 5 = 0 THEN 'imagegroups.catalog_parsed' ELSE 'imagegroups.stage_finished' END,
       CASE WHEN i % 50 = 0 THEN 'duplicate' WHEN i % 70 = 0 THEN 'stale' ELSE 'applied' END,
       {_AT}
FROM generate_series(0, :rows - 1) AS i
"""

_IMAGES = (
    "jsonb_build_array(jsonb_build_object('role', 'compute', 'image_name', 'compute.img'), "
    "jsonb_build_object('role', 'login', 'image_name', 'login.img'))"
)
OUTBOX = f"""
INSERT INTO outbox (event_id, task_name, queue, body, image_group_id, created_at, sent_at)
SELECT e.id, 'pipeline.' || e.kind, 'pipeline.' || e.kind,
       jsonb_build_object(
         'event_id', e.id, 'event_type', e.kind || '.requested', 'schema_version', 1,
         'occurred_at', to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
         'job_id', {_UUID}, 'causation_id', {_UUID}, 'correlation_id', {_UUID},
         'payload', jsonb_build_object('image_group_id', e.gid, 'attempt', 1)
           || CASE WHEN e.kind = 'deploy' THEN jsonb_build_object('images', {_IMAGES})
              ELSE '{{}}'::jsonb END),
       e.gid, e.at, e.at + interval '5 milliseconds'
FROM (SELECT {_UUID} AS id, (ARRAY['deploy', 'pxe_boot', 'validate'])[i % 3 + 1] AS kind,
             'old-' || (i / 3 % :groups) AS gid, {_AT} AS at
      FROM generate_series(0, :rows - 1) AS i) AS e
"""

DELIVERIES = f"""
INSERT INTO event_deliveries (key, attempts, first_at, last_at)
SELECT {_UUID}, 1 + i % 3, {_AT}, {_AT} + interval '2 seconds'
FROM generate_series(0, :rows - 1) AS i
"""

_BODY = (
    '\'[[], {"event": {"event_id": "\' || e.id || \'", "event_type": "stage.finished", '
    '"schema_version": 1, "occurred_at": "2026-01-01T00:00:00+00:00", "job_id": "\' || '
    f'{_UUID} || \'", "payload": {{"stage": "build-image", "outcome": "wonderful"}}}}}}, '
    '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}]\''
)
_TRACEBACK = (
    "'Traceback (most recent call last):\n' || repeat('  File \"/app/workers/edge/task.py\", "
    "line 57, in process\n    envelope = parse(model, args, kwargs)\n', 6) || "
    "'workers.errors.InvalidEventError: invalid StageFinishedEvent: payload.outcome'"
)
LETTERS = f"""
INSERT INTO dead_letters (task_name, event_id, body, content_type, error_type, error_message,
                          traceback, attempts, status, first_failed_at, last_failed_at, replayed_at)
SELECT 'imagegroups.stage_finished', e.id, {_BODY}, 'application/json', 'InvalidEventError',
       'invalid StageFinishedEvent: payload.outcome: Input should be ''succeeded'' or ''failed''',
       {_TRACEBACK}, 1, e.status, e.at, e.at,
       CASE WHEN e.status = 'replayed' THEN e.at + interval '1 hour' END
FROM (SELECT {_UUID} AS id, {_AT} AS at,
             CASE WHEN i % 10 = 0 THEN 'dead' WHEN i % 10 < 6 THEN 'discarded' ELSE 'replayed' END
               AS status
      FROM generate_series(0, :rows - 1) AS i) AS e
"""

TABLES = ["processed_events", "outbox", "transition_history", "event_deliveries", "dead_letters"]
STEPS = [GROUPS, HISTORY, INBOX, OUTBOX, DELIVERIES, LETTERS]


def prefill(url: str, rows: int) -> float:
    """Fill, then VACUUM ANALYZE and CHECKPOINT as a long-lived database would be; seconds."""
    start = time.perf_counter()
    params = {"rows": rows, "groups": (rows + 7) // 8}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for step in STEPS:
                conn.execute(text(step), params)
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text("CHECKPOINT"))
    finally:
        engine.dispose()
    return time.perf_counter() - start


def sizes(url: str) -> dict[str, tuple[int, int]]:
    """Rows and total bytes (with indexes and TOAST) of each pre-filled table."""
    engine = create_engine(url)
    found: dict[str, tuple[int, int]] = {}
    try:
        with engine.connect() as conn:
            for table in TABLES:
                count = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                size = conn.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
                found[table] = (int(count), int(size))
    finally:
        engine.dispose()
    return found
