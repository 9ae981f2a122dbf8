"""Message schemas (pydantic v2): the envelope of docs/contract.md §2 and each payload, strict."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
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

from domain import ImageGroupId, RoleName, check_name

SCHEMA_VERSION = 1
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
StageText = Literal[
    "build-image",
    "build-image-x86_64",
    "build-image-aarch64",
    "deploy",
    "pxe-boot",
    "restart",
    "validate",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogParsedPayload(Strict):
    image_group_id: GroupIdText
    roles: list[RoleText] = Field(min_length=1, json_schema_extra={"uniqueItems": True})
    role_images: dict[RoleText, ImageNameText] | None = None
    catalog_name: StrictStr | None = None
    catalog_version: StrictStr | None = None

    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[str]) -> list[str]:
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise ValueError(f"roles must be unique; repeated: {dupes}")
        return roles

    @model_validator(mode="after")
    def _images_name_known_roles(self) -> CatalogParsedPayload:
        unknown = sorted(set(self.role_images or {}) - set(self.roles))
        if unknown:
            raise ValueError(f"role_images names roles that are not in roles: {unknown}")
        return self


class StageFinishedPayload(Strict):
    stage: StageText
    outcome: Literal["succeeded", "failed"]
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
            raise ValueError(f"unsupported schema_version {version!r}; this worker reads 1")
        return version

    def ids(self) -> tuple[str, str]:
        return str(self.event_id), str(self.job_id)


class CatalogParsedEvent(EnvelopeBase):
    event_type: Literal["catalog.parsed"]
    payload: CatalogParsedPayload


class StageFinishedEvent(EnvelopeBase):
    event_type: Literal["stage.finished"]
    payload: StageFinishedPayload


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
    event_type: Literal["deploy.requested"]
    payload: DeployRequestedPayload


class PxeBootRequestedEvent(EnvelopeBase):
    event_type: Literal["pxe_boot.requested"]
    payload: StageRequestedPayload


class ValidateRequestedEvent(EnvelopeBase):
    event_type: Literal["validate.requested"]
    payload: StageRequestedPayload


#: Every message of the contract, by the file name its JSON Schema is exported under.
SCHEMAS: dict[str, type[EnvelopeBase]] = {
    "catalog.parsed": CatalogParsedEvent,
    "stage.finished": StageFinishedEvent,
    "deploy.requested": DeployRequestedEvent,
    "pxe_boot.requested": PxeBootRequestedEvent,
    "validate.requested": ValidateRequestedEvent,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
