"""Typed domain errors; each carries the ids involved so logs and dead letters can name them.

Every error keeps its constructor arguments as `args` and builds its text in `__str__`:
Celery stores an exception as (type, module, args) and rebuilds it as `cls(*args)`, and
pickle does the same, so a rebuilt error must take back exactly what it was given.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """Base of every rule the domain refuses; never worth a retry."""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The error's text; subclasses build it from their fields."""
        return super().__str__()


class DuplicateImageGroupError(DomainError):
    def __init__(self, image_group_id: str, job_id: str, held_by_job_id: str | None) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        self.held_by_job_id = held_by_job_id
        super().__init__(image_group_id, job_id, held_by_job_id)

    def describe(self) -> str:
        return (
            f"image group {self.image_group_id!r} is already held by job {self.held_by_job_id}; "
            f"job {self.job_id} cannot take it"
        )


class ImageGroupNotFoundError(DomainError):
    def __init__(self, image_group_id: str | None = None, job_id: str | None = None) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        super().__init__(image_group_id, job_id)

    def describe(self) -> str:
        if self.image_group_id is not None:
            return f"no image group with id {self.image_group_id!r}"
        return f"no image group with job {self.job_id}"


class ImageGroupMismatchError(DomainError):
    def __init__(self, job_id: str, expected: str | None, given: str) -> None:
        self.job_id = job_id
        self.expected = expected
        self.given = given
        super().__init__(job_id, expected, given)

    def describe(self) -> str:
        return f"job {self.job_id} belongs to image group {self.expected!r}, not {self.given!r}"


class InvalidStateTransitionError(DomainError):
    def __init__(
        self,
        image_group_id: str,
        current: str,
        target: str,
        allowed: Iterable[str],
        reason: str = "",
    ) -> None:
        self.image_group_id = image_group_id
        self.current = current
        self.target = target
        self.allowed = tuple(sorted(allowed))
        self.reason = reason
        super().__init__(image_group_id, current, target, self.allowed, reason)

    def describe(self) -> str:
        text = (
            f"image group {self.image_group_id!r} cannot move from {self.current} to "
            f"{self.target}; allowed from {self.current}: {', '.join(self.allowed) or 'nothing'}"
        )
        return f"{text} ({self.reason})" if self.reason else text


class StaleResultError(DomainError):
    """A stage result for a state the group already left, or for an older attempt."""

    def __init__(self, image_group_id: str, current: str, stage: str, reason: str) -> None:
        self.image_group_id = image_group_id
        self.current = current
        self.stage = stage
        self.reason = reason
        super().__init__(image_group_id, current, stage, reason)

    def describe(self) -> str:
        return (
            f"stale {self.stage} result for image group {self.image_group_id!r} "
            f"(now {self.current}): {self.reason}"
        )


class CatalogConflictError(DomainError):
    """The job's id is reserved already, for a catalog with other roles or images."""

    def __init__(self, image_group_id: str, job_id: str) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        super().__init__(image_group_id, job_id)

    def describe(self) -> str:
        return (
            f"job {self.job_id} already reserved image group {self.image_group_id!r} for a "
            "catalog with other roles or images; the first catalog stands"
        )


class CatalogNotParsedError(DomainError):
    """A build result arrived before its catalog; the catalog may still be on its way."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(job_id)

    def describe(self) -> str:
        return f"no catalog has been parsed for job {self.job_id} yet"


class GroupNotCreatedError(ImageGroupNotFoundError):
    """A stage result arrived before the job's group exists; it may still be on its way."""


class NotOverdueError(DomainError):
    """A stage was to be expired, but the group no longer waits for it or has time left."""

    def __init__(self, image_group_id: str, stage: str, attempt: int, reason: str) -> None:
        self.image_group_id = image_group_id
        self.stage = stage
        self.attempt = attempt
        self.reason = reason
        super().__init__(image_group_id, stage, attempt, reason)

    def describe(self) -> str:
        return (
            f"image group {self.image_group_id!r} is not overdue for {self.stage} attempt "
            f"{self.attempt}: {self.reason}"
        )
