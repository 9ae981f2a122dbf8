"""Typed domain errors; each carries the ids involved so logs and dead letters can name them."""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """Base of every rule the domain refuses; never worth a retry."""


class DuplicateImageGroupError(DomainError):
    def __init__(self, image_group_id: str, job_id: str, held_by_job_id: str | None) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        self.held_by_job_id = held_by_job_id
        super().__init__(
            f"image group {image_group_id!r} is already held by job {held_by_job_id}; "
            f"job {job_id} cannot take it"
        )


class ImageGroupNotFoundError(DomainError):
    def __init__(self, image_group_id: str | None = None, job_id: str | None = None) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        key = f"id {image_group_id!r}" if image_group_id is not None else f"job {job_id}"
        super().__init__(f"no image group with {key}")


class ImageGroupMismatchError(DomainError):
    def __init__(self, job_id: str, expected: str | None, given: str) -> None:
        self.job_id = job_id
        self.expected = expected
        self.given = given
        super().__init__(f"job {job_id} belongs to image group {expected!r}, not {given!r}")


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
        text = (
            f"image group {image_group_id!r} cannot move from {current} to {target}; "
            f"allowed from {current}: {', '.join(self.allowed) or 'nothing'}"
        )
        super().__init__(f"{text} ({reason})" if reason else text)


class StaleResultError(DomainError):
    """A stage result for a state the group already left, or for an older attempt."""

    def __init__(self, image_group_id: str, current: str, stage: str, reason: str) -> None:
        self.image_group_id = image_group_id
        self.current = current
        self.stage = stage
        super().__init__(
            f"stale {stage} result for image group {image_group_id!r} (now {current}): {reason}"
        )


class CatalogConflictError(DomainError):
    """The job's id is reserved already, for a catalog with other roles or images."""

    def __init__(self, image_group_id: str, job_id: str) -> None:
        self.image_group_id = image_group_id
        self.job_id = job_id
        super().__init__(
            f"job {job_id} already reserved image group {image_group_id!r} for a catalog with "
            "other roles or images; the first catalog stands"
        )


class CatalogNotParsedError(DomainError):
    """A build result arrived before its catalog; the catalog may still be on its way."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no catalog has been parsed for job {job_id} yet")


class GroupNotCreatedError(ImageGroupNotFoundError):
    """A stage result arrived before the job's group exists; it may still be on its way."""
