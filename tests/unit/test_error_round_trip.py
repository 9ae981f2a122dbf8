"""Domain errors survive Celery's result serialisation: rebuilt from their args, same text."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from domain import (
    CatalogConflictError,
    CatalogNotParsedError,
    DomainError,
    DuplicateImageGroupError,
    GroupNotCreatedError,
    ImageGroupMismatchError,
    ImageGroupNotFoundError,
    ImageGroupStatus,
    InvalidStateTransitionError,
    NotOverdueError,
    StageName,
    StaleResultError,
)

JOB = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
S = ImageGroupStatus

#: One or more instances of every DomainError subclass, built as the code raises them.
EXAMPLES: list[DomainError] = [
    DuplicateImageGroupError("group-1", JOB, "another-job"),
    DuplicateImageGroupError("group-1", JOB, None),
    ImageGroupNotFoundError(image_group_id="group-1"),
    ImageGroupNotFoundError(job_id=JOB),
    ImageGroupMismatchError(JOB, "group-1", "group-2"),
    ImageGroupMismatchError(JOB, None, "group-2"),
    InvalidStateTransitionError("group-1", S.BUILT, S.VALIDATING, [S.DEPLOYING, S.CLEANED]),
    InvalidStateTransitionError("group-1", S.CLEANED, S.CLEANED, [], "already cleaned"),
    StaleResultError("group-1", S.RESTARTING, StageName.DEPLOY, "the group already left"),
    CatalogConflictError("group-1", JOB),
    CatalogNotParsedError(JOB),
    GroupNotCreatedError(job_id=JOB),
    NotOverdueError("group-1", StageName.DEPLOY, 1, "its deadline has not passed"),
]


def _subclasses(cls: type[DomainError]) -> Iterator[type[DomainError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.fixture(scope="module")
def json_backend() -> Iterator[Any]:
    """A Redis result backend as the worker configures it; no server is contacted."""
    app = Celery("round-trip", backend="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(result_serializer="json", result_accept_content=["json"])
    try:
        yield app.backend
    finally:
        app.close()


def _ids(exc: BaseException) -> str:
    return f"{type(exc).__name__}-{exc}"[:70]


def test_every_domain_error_subclass_has_an_example_here() -> None:
    assert set(_subclasses(DomainError)) <= {type(e) for e in EXAMPLES}


@pytest.mark.parametrize("exc", EXAMPLES, ids=_ids)
def test_a_domain_error_rebuilt_by_the_json_result_backend_says_the_same(
    exc: DomainError, json_backend: Any
) -> None:
    # What a failed or retried task's result goes through on its way to Flower and back.
    stored = json_backend.decode(json_backend.encode(json_backend.prepare_exception(exc)))

    rebuilt = json_backend.exception_to_python(stored)

    assert type(rebuilt) is type(exc)
    assert str(rebuilt) == str(exc)
    assert str(exc) not in repr(exc.args), "args must be the fields, not the text"


@pytest.mark.parametrize("exc", EXAMPLES, ids=_ids)
def test_a_domain_error_rebuilt_by_pickle_says_the_same_and_keeps_its_fields(
    exc: DomainError,
) -> None:
    rebuilt = pickle.loads(pickle.dumps(exc))

    assert type(rebuilt) is type(exc)
    assert str(rebuilt) == str(exc)
    assert vars(rebuilt) == vars(exc)


def test_a_rebuilt_catalog_not_parsed_error_names_the_job_once() -> None:
    text = str(CatalogNotParsedError(*CatalogNotParsedError(JOB).args))

    assert text == f"no catalog has been parsed for job {JOB} yet"
