"""What a message must be to be accepted, checked once: the envelope's schemas (pydantic v2)
with their field rules, and the protocol of the Celery message that carries it; an accepted
message becomes a command.

The field types come first, each bounded as its column.

A valid event must never fail on a column's limit (persistence/models.py):
tests/unit/test_schema_bounds.py holds the exported JSON Schemas and the tables together.

Message schemas (pydantic v2): the envelope of docs/contract.md §2 and each payload, strict.

What this worker accepts, each rule checked once: a Celery task message (`accept_message`,
in the consumer, before Celery sees it) whose call carries one envelope of docs/contract.md §2
(`accept_call`, in the task: workers/edge/accept.py), turned into a command, or a `Refusal` with
its reason and the event's id when the body names a valid one.

Celery trusts its publishers: a bad header or body escapes from its consumer as an exception
(which the Redis transport takes for a lost connection), or fails the task before our code
runs (and the message is acked away). A per-message `timelimit` and `expires` are the
worker's business (a publisher must not have handlers killed, nor an event dropped), so they
are removed, as is every header Celery does not define, since each header becomes an
attribute of the task's request: no header a publisher sets steers the worker. An `eta` too
far ahead is dropped, not refused.
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
import logging
import uuid
from collections.abc import Callable, Container, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TypeVar

from celery.utils.time import maybe_iso8601
from pydantic import ValidationError

from workers.errors import (
    InvalidEventError,
    InvalidTaskMessageError,
    UndecodableMessageError,
    UnknownTaskError,
)
from workers.messages import MALFORMED_HEADER

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


log = logging.getLogger(__name__)

E = TypeVar("E", bound=EnvelopeBase)

#: Headers passed on to Celery, each with the check its value must pass.
_TEXT = (lambda v: v is None or isinstance(v, str), "a string or null")

_FLAG = (lambda v: v is None or isinstance(v, bool), "true, false or null")

_HEADERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(
        ("lang", "shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr"), _TEXT
    ),
    **dict.fromkeys(("origin", "compression"), _TEXT),
    **dict.fromkeys(("ignore_result", "redelivered"), _FLAG),
    "group_index": (lambda v: v is None or _is_int(v), "an integer or null"),
    "retries": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "eta": (lambda v: v is None or isinstance(v, str), "an ISO 8601 timestamp or null"),
}

#: Keys Celery reads from the body's third element; any other would land on the request.
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})

#: A task id (Celery's, not ours: the domain's ids are bounded in domain/model.py).
MAX_TASK_ID_LENGTH = 255

#: What the consumer refuses a message with, each its own dead letter's error_type.
MESSAGE_ERRORS = (InvalidTaskMessageError, UndecodableMessageError, UnknownTaskError)


@dataclass(frozen=True)
class Delivery:
    """What the broker tells of this delivery of a task message."""

    task_name: str
    task_id: str
    retries: int  # how often the task has retried itself before this delivery
    redelivered: bool  # the broker handed it out before (a worker died holding it)

    def is_redelivery(self) -> bool:
        return self.retries > 0 or self.redelivered

    def attempt_at_least(self) -> int:
        """At least this attempt; `retries` is a publisher's header: never "the last"."""
        return 1 + min(self.retries, 1)


@dataclass(frozen=True)
class Accepted:
    """A valid event, as the command its handler takes."""

    command: ReserveCatalog | RecordStageResult
    event_id: str
    delivery: Delivery

    def on_attempt(self, attempt: int) -> ReserveCatalog | RecordStageResult:
        """The command as this delivery of its event carries it (the inbox keeps the count)."""
        return replace(self.command, ids=replace(self.command.ids, delivery=attempt))


@dataclass(frozen=True)
class Refusal:
    """Why a message or a call is not accepted; `error` is what its dead letter records."""

    error: Exception
    event_id: str | None

    @property
    def reason(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def accept_message(
    message: Any, accepted: Container[str], *, now: datetime, max_eta: timedelta
) -> Refusal | None:
    """The consumer's one check of a message: None when Celery may run it (its headers made
    fit for it), or the refusal; the call inside is accepted by the task (`accept_call`)."""
    try:
        check(message, accepted, now=now, max_eta=max_eta)
    except MESSAGE_ERRORS as refused:
        return Refusal(refused, message_event_id(message))
    return None


def check(message: Any, accepted: Container[str], *, now: datetime, max_eta: timedelta) -> None:
    """Raise one of the message errors, or leave the message's headers fit for Celery.

    `accepted`: the task names this worker runs; `max_eta`: how far ahead a message may be
    scheduled (an eta further ahead is dropped: a message held long ties up the worker).
    """
    headers = message.headers
    if isinstance(headers, MutableMapping) and MALFORMED_HEADER in headers:
        raise InvalidTaskMessageError(f"malformed broker message: {headers[MALFORMED_HEADER]}")
    if not isinstance(headers, MutableMapping):
        raise InvalidTaskMessageError(
            f"headers must be a mapping, got {type(headers).__name__} "
            "(not a Celery protocol 2 task message)"
        )
    _check_task(message, headers, accepted)
    _check_id(headers.get("id"))
    headers.setdefault("retries", 0)
    for key, (valid, wanted) in _HEADERS.items():
        if key in headers and not valid(headers[key]):
            raise InvalidTaskMessageError(f"header {key!r} must be {wanted}, got {headers[key]!r}")
    for key in [k for k in headers if k not in _HEADERS and k not in ("task", "id")]:
        del headers[key]
    _check_body(message)
    _check_eta(message, headers, now, max_eta)


def _check_task(message: Any, headers: MutableMapping[str, Any], accepted: Container[str]) -> None:
    task = headers.get("task")
    if task is None:
        if isinstance(_decoded(message), dict) and "task" in _decoded(message):
            raise InvalidTaskMessageError(
                "a Celery protocol 1 message (task name in the body); publish with "
                "protocol 2, Celery's default"
            )
        raise InvalidTaskMessageError("no 'task' header: not a Celery protocol 2 task message")
    if not isinstance(task, str):
        raise InvalidTaskMessageError(f"header 'task' must be a string, got {task!r}")
    if task not in accepted:
        raise UnknownTaskError(f"unknown task {task[:200]!r}: this worker does not run it")


def _check_id(task_id: Any) -> None:
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_LENGTH:
        raise InvalidTaskMessageError(
            f"header 'id' must be a string of 1 to {MAX_TASK_ID_LENGTH} characters, got {task_id!r}"
        )


def _check_eta(
    message: Any, headers: MutableMapping[str, Any], now: datetime, max_eta: timedelta
) -> None:
    """An eta is only a request to wait: one too far ahead is dropped (the event runs now),
    never a reason to refuse the event. Events are idempotent facts, so running one early
    costs at most an attempt, and a clock far off must not turn our own retry into a dead
    letter. The bound already allows for clocks that disagree (see Settings.max_eta_seconds)."""
    eta = headers.get("eta")
    if eta is None:
        return
    try:
        when = maybe_iso8601(eta)
    except (ValueError, OverflowError, TypeError):
        when = None
    if when is None:  # Celery reads "" as no time at all, then fails on it
        raise InvalidTaskMessageError(f"header 'eta' is not a timestamp: {eta!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when - now > max_eta:
        log.warning(
            "%s event_id=%s task_id=%s: eta %s is more than %.0fs ahead (a clock far off, or "
            "the publisher's choice); it runs now",
            headers.get("task"),
            call_event_id(*_decoded(message)[:2]),
            headers.get("id"),
            eta,
            max_eta.total_seconds(),
        )
        headers["eta"] = None


def _check_body(message: Any) -> None:
    body = _decoded(message)
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise InvalidTaskMessageError(
            f"body must be the protocol 2 triple [args, kwargs, embed], got {type(body).__name__}"
        )
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        raise InvalidTaskMessageError(f"args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise InvalidTaskMessageError(f"kwargs must be an object, got {type(kwargs).__name__}")
    if "self" in kwargs:
        # Celery calls every task as `__call__(self, *args, **kwargs)`: it would fail there.
        raise InvalidTaskMessageError("kwargs must not have a key 'self'")
    if embed is None:
        return
    if not isinstance(embed, dict):
        raise InvalidTaskMessageError(f"embed must be an object, got {type(embed).__name__}")
    unknown = sorted(str(k) for k in set(embed) - _EMBED_KEYS)
    if unknown:
        raise InvalidTaskMessageError(f"embed has keys Celery does not define: {unknown}")
    used = sorted(k for k, v in embed.items() if v)
    if used:
        raise InvalidTaskMessageError(
            f"workflow links are not accepted on event tasks (embed sets {used}); "
            "an event must not make the worker send other tasks"
        )


def _decoded(message: Any) -> Any:
    """The body, decoded once (kombu keeps it for Celery); any failure is undecodable."""
    try:
        return message.decode()
    except Exception as exc:
        raise UndecodableMessageError(f"{type(exc).__name__}: {exc}") from exc


def call_event_id(args: Any, kwargs: Any) -> str | None:
    """The event_id of the envelope a task call carries (keyword `event`, or a lone positional
    argument), in canonical form; None when there is no valid one. A dead letter of a message
    refused for any reason still names its event by this."""
    if isinstance(kwargs, dict) and "event" in kwargs:
        return event_id_of(kwargs["event"])
    if isinstance(args, Sequence) and not isinstance(args, str) and len(args) == 1:
        return event_id_of(args[0])
    return None


def message_event_id(message: Any) -> str | None:
    """`call_event_id` of a message's body, when it decodes to a protocol 2 triple."""
    try:
        body = message.decode()
    except Exception:
        return None
    if isinstance(body, list | tuple) and len(body) == 3:
        return call_event_id(body[0], body[1])
    return None


def event_id_of(event: Any) -> str | None:
    """An envelope's event_id in canonical form, or None when it has no valid one."""
    value = event.get("event_id") if isinstance(event, dict) else None
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def accept_call(
    model: type[IncomingEvent], args: Any, kwargs: Any, delivery: Delivery
) -> Accepted | Refusal:
    """The task's one check of its call: the envelope as a command, or the refusal."""
    try:
        envelope = parse(model, args, kwargs)
    except InvalidEventError as refused:
        return Refusal(refused, call_event_id(args, kwargs))
    command = envelope.to_command()
    return Accepted(command, command.ids.event_id, delivery)


def parse(model: type[E], args: Any, kwargs: Any) -> E:
    """The call as the contract has it (one keyword, `event`, an object; the consumer checked
    its shape, `check`) validated into the envelope model; any mismatch is InvalidEventError."""
    if args:
        raise InvalidEventError(
            "positional arguments are not accepted; send the envelope as keyword 'event'"
        )
    extra = sorted(set(kwargs) - {"event"})
    if extra:
        raise InvalidEventError(f"unexpected keyword arguments {extra}; only 'event' is accepted")
    if "event" not in kwargs:
        raise InvalidEventError("missing keyword argument 'event' (the envelope)")
    event = kwargs["event"]
    if not isinstance(event, dict):
        raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidEventError(f"invalid {model.__name__}: {problems}") from None
