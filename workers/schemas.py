"""Message schemas (pydantic v2): the envelope of docs/contract.md §2 and each payload, strict."""

from __future__ import annotations

import json
import re
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

MAX_RESULT_DETAIL_BYTES = 64 * 1024
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
    return value


def _group_id(value: str) -> str:
    return ImageGroupId(value).value


def _role(value: str) -> str:
    return RoleName(value).value


def _image_name(value: str) -> str:
    return check_name(value, "image name")


Uuid = Annotated[UUID, BeforeValidator(_uuid_text), Field(json_schema_extra={"type": "string"})]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    Field(json_schema_extra={"type": "string", "format": "date-time"}),
]
GroupIdText = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=128, pattern=_NO_CONTROL),
    AfterValidator(_group_id),
]
RoleText = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=128, pattern=_NO_CONTROL),
    AfterValidator(_role),
]
# The Image's own rule: a bad name must fail here, not when the group is built.
ImageNameText = Annotated[
    StrictStr,
    AfterValidator(_image_name),
    Field(json_schema_extra={"minLength": 1, "pattern": _NO_CONTROL}),
]
# The names come from the domain; Literals, so that the JSON Schema lists them.
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogParsedPayload(Strict):
    image_group_id: GroupIdText
    roles: list[RoleText] = Field(min_length=1, json_schema_extra={"uniqueItems": True})
    role_images: dict[RoleText, ImageNameText] | None = None
    catalog_name: StrictStr | None = None
    catalog_version: StrictStr | None = None

    # The domain's rule (domain/catalog.py), checked at the edge: the roles alone first, so
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
    attempt: Annotated[StrictInt, Field(ge=1)] | None = None
    request_event_id: Uuid | None = None
    error_code: StrictStr | None = None
    error_summary: StrictStr | None = None
    result_detail: dict[str, Any] | None = None

    @field_validator("result_detail")
    @classmethod
    def _bounded(cls, detail: dict[str, Any] | None) -> dict[str, Any] | None:
        if detail is not None:
            size = len(json.dumps(detail, separators=(",", ":")).encode())
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
        return EventIds(str(self.event_id), str(self.job_id), correlation)


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
        p = self.payload
        return RecordStageResult(
            ids=self.event_ids(),
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
    role: StrictStr
    image_name: StrictStr


class DeployRequestedPayload(Strict):
    image_group_id: StrictStr
    attempt: StrictInt
    images: list[ImageRef]


class StageRequestedPayload(Strict):
    image_group_id: StrictStr
    attempt: StrictInt


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
