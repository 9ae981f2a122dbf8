"""Value objects and enumerations of the image-group domain."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

MAX_ID_LENGTH = 128


class InvalidValueError(ValueError):
    """A value object was built from input that breaks one of its rules."""


def check_name(value: object, what: str, *, max_length: int | None = None) -> str:
    """The rule every name obeys: a non-blank, trimmed string with no control characters.

    Control, format, line/paragraph separators and lone surrogates are refused: they break
    logs and terminals, and PostgreSQL cannot store a NUL or a lone surrogate at all.
    """
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be a string, got {type(value).__name__}")
    if value == "" or value.isspace():
        raise InvalidValueError(f"{what} must not be empty or blank")
    if max_length is not None and len(value) > max_length:
        raise InvalidValueError(f"{what} must be at most {max_length} characters, got {len(value)}")
    if value != value.strip():
        raise InvalidValueError(f"{what} must not have leading or trailing whitespace: {value!r}")
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InvalidValueError(
                f"{what} must not contain control characters "
                f"(found {char!r} at position {position})"
            )
    return value


def _check_identifier(value: object, what: str) -> str:
    return check_name(value, what, max_length=MAX_ID_LENGTH)


@dataclass(frozen=True, slots=True)
class ImageGroupId:
    """The catalog Identifier that names one image group."""

    value: str

    def __post_init__(self) -> None:
        _check_identifier(self.value, "image_group_id")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RoleName:
    """A functional role of the catalog (one image per role)."""

    value: str

    def __post_init__(self) -> None:
        _check_identifier(self.value, "role")

    def __str__(self) -> str:
        return self.value


class ImageGroupStatus(enum.StrEnum):
    BUILT = "BUILT"
    DEPLOYING = "DEPLOYING"
    DEPLOYED = "DEPLOYED"
    RESTARTING = "RESTARTING"
    RESTARTED = "RESTARTED"
    VALIDATING = "VALIDATING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    CLEANED = "CLEANED"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({ImageGroupStatus.PASSED, ImageGroupStatus.FAILED, ImageGroupStatus.CLEANED})


class PipelinePhase(enum.StrEnum):
    BUILD = "BUILD"
    DEPLOY = "DEPLOY"


class StageOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StageName(enum.StrEnum):
    BUILD_IMAGE = "build-image"
    BUILD_IMAGE_X86_64 = "build-image-x86_64"
    BUILD_IMAGE_AARCH64 = "build-image-aarch64"
    DEPLOY = "deploy"
    PXE_BOOT = "pxe-boot"
    VALIDATE = "validate"

    @classmethod
    def parse(cls, text: str) -> StageName:
        """Read a stage name as publishers spell it, aliases included (see STAGE_ALIASES)."""
        alias = STAGE_ALIASES.get(text)
        if alias is not None:
            return alias
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(cls.spellings())
            raise InvalidValueError(f"unknown stage {text!r}; expected one of {known}") from None

    @classmethod
    def spellings(cls) -> list[str]:
        """Every stage name a publisher may send: the stages, then their aliases."""
        return [stage.value for stage in cls] + list(STAGE_ALIASES)

    def is_build(self) -> bool:
        return self in _BUILD_STAGES


#: Old names publishers still send; `restart` is what pxe-boot used to be called.
STAGE_ALIASES: dict[str, StageName] = {"restart": StageName.PXE_BOOT}

_BUILD_STAGES = frozenset(
    {StageName.BUILD_IMAGE, StageName.BUILD_IMAGE_X86_64, StageName.BUILD_IMAGE_AARCH64}
)
