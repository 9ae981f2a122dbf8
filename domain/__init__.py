"""The image-group domain: pure Python, standard library only."""

from __future__ import annotations

from domain.catalog import CatalogReservation
from domain.errors import (
    CatalogNotParsedError,
    DomainError,
    DuplicateImageGroupError,
    GroupNotCreatedError,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    InvalidStateTransitionError,
    StaleResultError,
)
from domain.model import (
    ALLOWED_TRANSITIONS,
    CLEANABLE,
    FLOW_ORDER,
    STAGE_FLOW,
    Image,
    ImageGroup,
    StageFlow,
    StageRequest,
    Transition,
    next_stage,
)
from domain.records import (
    DeadLetter,
    DeadLetterStatus,
    JobRecord,
    Outcome,
    OutboxMessage,
    Page,
    StageRecord,
    StageState,
)
from domain.values import (
    MAX_ID_LENGTH,
    ImageGroupId,
    ImageGroupStatus,
    InvalidValueError,
    PipelinePhase,
    RoleName,
    StageName,
    StageOutcome,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CLEANABLE",
    "FLOW_ORDER",
    "MAX_ID_LENGTH",
    "STAGE_FLOW",
    "CatalogNotParsedError",
    "CatalogReservation",
    "DeadLetter",
    "DeadLetterStatus",
    "DomainError",
    "DuplicateImageGroupError",
    "GroupNotCreatedError",
    "Image",
    "ImageGroup",
    "ImageGroupId",
    "ImageGroupMismatchError",
    "ImageGroupNotFoundError",
    "ImageGroupStatus",
    "InvalidStateTransitionError",
    "InvalidValueError",
    "JobRecord",
    "OutboxMessage",
    "Outcome",
    "Page",
    "PipelinePhase",
    "RoleName",
    "StageFlow",
    "StageName",
    "StageOutcome",
    "StageRecord",
    "StageRequest",
    "StageState",
    "Transition",
    "next_stage",
]
