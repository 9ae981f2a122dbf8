"""Message schemas (pydantic v2): the envelope of docs/contract.md §2 and each payload, strict."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
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
    check_roles,
)
from workers.messages import CATALOG_PARSED, FOLLOW_ON, SCHEMA_VERSION, STAGE_FINISHED
from workers.schema_fields import (
    Attempt,
    GroupIdText,
    ImageNameText,
    RoleText,
    StoredIdText,
    Timestamp,
    Uuid,
)

MAX_RESULT_DETAIL_BYTES = 64 * 1024

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
