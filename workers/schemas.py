"""The contract's envelope as pydantic schemas, with the field rules they use.

The field types come first, each bounded as its column.

A valid event must never fail on a column's limit (persistence/models.py):
tests/unit/test_schema_bounds.py holds the exported JSON Schemas and the tables together.

Message schemas (pydantic v2): the envelope of docs/contract.md §2 and each payload, strict.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from domain import (
    MAX_ID_LENGTH,
    CatalogReservation,
    EventIds,
    ImageGroupId,
    RecordStageResult,
    ReserveCatalog,
    RoleName,
    StageName,
    StageOutcome,
    check_name,
    check_roles,
)
from workers.messages import CATALOG_PARSED, FOLLOW_ON, SCHEMA_VERSION, STAGE_FINISHED

if TYPE_CHECKING:
    StageText: TypeAlias = str
    OutcomeText: TypeAlias = str
    CatalogParsedType: TypeAlias = str
    StageFinishedType: TypeAlias = str
    DeployRequestedType: TypeAlias = str
    PxeBootRequestedType: TypeAlias = str
    ValidateRequestedType: TypeAlias = str
else:
    StageText = Literal[tuple(StageName.spellings())]
    OutcomeText = Literal[tuple(outcome.value for outcome in StageOutcome)]
    CatalogParsedType = Literal[CATALOG_PARSED.event_type]
    StageFinishedType = Literal[STAGE_FINISHED.event_type]
    DeployRequestedType = Literal[FOLLOW_ON[StageName.DEPLOY].event_type]
    PxeBootRequestedType = Literal[FOLLOW_ON[StageName.PXE_BOOT].event_type]
    ValidateRequestedType = Literal[FOLLOW_ON[StageName.VALIDATE].event_type]


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


MAX_RESULT_DETAIL_BYTES = 64 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogParsedPayload(Strict):
    image_group_id: GroupIdText
    roles: list[RoleText] = Field(min_length=1, json_schema_extra={"uniqueItems": True})
    role_images: dict[RoleText, ImageNameText] | None = None
    catalog_name: StrictStr | None = None
    catalog_version: StrictStr | None = None

    # The domain's rule (domain/model.py), checked at the edge: the roles alone first, so
    # that a repeated role is reported on `roles`, then with the images.
    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[str]) -> list[str]:
        check_roles(roles, None)
        return roles

    @model_validator(mode="after")
    def _images_name_known_roles(self) -> CatalogParsedPayload:
        check_roles(self.roles, self.role_images)
        return self


class StageFinishedPayload(Strict):
    stage: StageText
    outcome: OutcomeText
    image_group_id: GroupIdText | None = None
    attempt: Attempt | None = None
    request_event_id: Uuid | None = None
    error_code: StrictStr | None = None
    error_summary: StrictStr | None = None
    result_detail: dict[str, Any] | None = None

    @field_validator("result_detail")
    @classmethod
    def _bounded(cls, detail: dict[str, Any] | None) -> dict[str, Any] | None:
        if detail is not None:
            try:
                # NaN and Infinity are not JSON, and a JSONB column refuses them.
                text = json.dumps(detail, separators=(",", ":"), allow_nan=False)
            except ValueError:
                raise ValueError("result_detail must not hold NaN or Infinity") from None
            size = len(text.encode())
            if size > MAX_RESULT_DETAIL_BYTES:
                raise ValueError(
                    f"result_detail is {size} bytes as JSON; at most {MAX_RESULT_DETAIL_BYTES}"
                )
        return detail


class EnvelopeBase(Strict):
    event_id: Uuid
    schema_version: Literal[1]
    occurred_at: Timestamp
    job_id: Uuid
    correlation_id: Uuid | None = None
    causation_id: Uuid | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _supported(cls, version: Any) -> Any:
        if version != SCHEMA_VERSION or not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(
                f"unsupported schema_version {version!r}; this worker reads {SCHEMA_VERSION}"
            )
        return version

    def ids(self) -> tuple[str, str]:
        return str(self.event_id), str(self.job_id)

    def event_ids(self) -> EventIds:
        correlation = None if self.correlation_id is None else str(self.correlation_id)
        causation = None if self.causation_id is None else str(self.causation_id)
        return EventIds(str(self.event_id), str(self.job_id), correlation, causation)


class IncomingEvent(EnvelopeBase):
    """An event the worker consumes; its handler takes the command it stands for."""

    def to_command(self) -> ReserveCatalog | RecordStageResult:
        raise NotImplementedError


class CatalogParsedEvent(IncomingEvent):
    event_type: CatalogParsedType
    payload: CatalogParsedPayload

    def to_command(self) -> ReserveCatalog:
        p = self.payload
        catalog = CatalogReservation(
            image_group_id=ImageGroupId(p.image_group_id),
            job_id=str(self.job_id),
            roles=tuple(RoleName(r) for r in p.roles),
            role_images=p.role_images or {},
            catalog_name=p.catalog_name,
            catalog_version=p.catalog_version,
        )
        return ReserveCatalog(ids=self.event_ids(), catalog=catalog)


class StageFinishedEvent(IncomingEvent):
    event_type: StageFinishedType
    payload: StageFinishedPayload

    def to_command(self) -> RecordStageResult:
        p, ids = self.payload, self.event_ids()
        if ids.causation_id is None and p.request_event_id is not None:
            ids = replace(ids, causation_id=str(p.request_event_id))  # the request it answers
        return RecordStageResult(
            ids=ids,
            stage=StageName.parse(p.stage),
            outcome=StageOutcome(p.outcome),
            image_group_id=None if p.image_group_id is None else ImageGroupId(p.image_group_id),
            attempt=p.attempt,
            request_event_id=None if p.request_event_id is None else str(p.request_event_id),
            error_code=p.error_code,
            error_summary=p.error_summary,
            result_detail=p.result_detail,
        )


class ImageRef(Strict):
    role: StoredIdText
    image_name: StrictStr


class DeployRequestedPayload(Strict):
    image_group_id: StoredIdText
    attempt: Attempt
    images: list[ImageRef]


class StageRequestedPayload(Strict):
    image_group_id: StoredIdText
    attempt: Attempt


class DeployRequestedEvent(EnvelopeBase):
    event_type: DeployRequestedType
    payload: DeployRequestedPayload


class PxeBootRequestedEvent(EnvelopeBase):
    event_type: PxeBootRequestedType
    payload: StageRequestedPayload


class ValidateRequestedEvent(EnvelopeBase):
    event_type: ValidateRequestedType
    payload: StageRequestedPayload


#: Every message of the contract, by the file name its JSON Schema is exported under.
SCHEMAS: dict[str, type[EnvelopeBase]] = {
    CATALOG_PARSED.event_type: CatalogParsedEvent,
    STAGE_FINISHED.event_type: StageFinishedEvent,
    FOLLOW_ON[StageName.DEPLOY].event_type: DeployRequestedEvent,
    FOLLOW_ON[StageName.PXE_BOOT].event_type: PxeBootRequestedEvent,
    FOLLOW_ON[StageName.VALIDATE].event_type: ValidateRequestedEvent,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
