"""The field types of the message schemas (workers/schemas.py), each bounded as its column.

A valid event must never fail on a column's limit (persistence/models.py):
tests/unit/test_schema_bounds.py holds the exported JSON Schemas and the tables together.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr, StringConstraints

from domain import MAX_ID_LENGTH, ImageGroupId, RoleName, check_name

MAX_ATTEMPT = 2**31 - 1  # stages.attempt and image_groups.attempt are 32-bit INTEGER
# The longest spelling of a UUID pydantic reads (`urn:uuid:` + 36); it is stored as 36.
MAX_UUID_TEXT = 45
# Not stored; bounded so that no field is without a limit (a nanosecond fraction fits).
MAX_TIMESTAMP_TEXT = 40
_NO_CONTROL = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
# RFC 3339 section 5.6 `date-time` (T and Z may be lowercase; a missing offset is reported
# below); ISO 8601 forms such as week dates, basic format or minute precision, which
# fromisoformat also takes, are not it.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)


def _rfc3339(value: Any) -> Any:
    """Only an RFC 3339 string with an offset: no epoch numbers, no naive times."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    if len(value) > MAX_TIMESTAMP_TEXT:
        raise ValueError(f"timestamp must be at most {MAX_TIMESTAMP_TEXT} characters")
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp needs a UTC offset: {value!r}")
    return parsed


def _uuid_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a UUID string")
    if len(value) > MAX_UUID_TEXT:
        raise ValueError(f"a UUID string is at most {MAX_UUID_TEXT} characters")
    return value


def _group_id(value: str) -> str:
    return ImageGroupId(value).value


def _role(value: str) -> str:
    return RoleName(value).value


def _image_name(value: str) -> str:
    return check_name(value, "image name")


Uuid = Annotated[
    UUID,
    BeforeValidator(_uuid_text),
    Field(json_schema_extra={"type": "string", "maxLength": MAX_UUID_TEXT}),
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    Field(
        json_schema_extra={
            "type": "string",
            "format": "date-time",
            "maxLength": MAX_TIMESTAMP_TEXT,
        }
    ),
]
Attempt = Annotated[StrictInt, Field(ge=1, le=MAX_ATTEMPT)]
# What the worker writes in its follow-ons: a group's id and a role, as stored.
StoredIdText = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
GroupIdText = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_NO_CONTROL),
    AfterValidator(_group_id),
]
RoleText = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_NO_CONTROL),
    AfterValidator(_role),
]
# The Image's own rule: a bad name must fail here, not when the group is built.
ImageNameText = Annotated[
    StrictStr,
    AfterValidator(_image_name),
    Field(json_schema_extra={"minLength": 1, "pattern": _NO_CONTROL}),
]
