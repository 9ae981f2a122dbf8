"""Envelope and payload validation (docs/contract.md §2), and how a bad call is reported."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from domain import StageName
from workers.edge.accept import (
    MAX_RESULT_DETAIL_BYTES,
    CatalogParsedEvent,
    DeployRequestedEvent,
    PxeBootRequestedEvent,
    StageFinishedEvent,
    ValidateRequestedEvent,
    parse,
)
from workers.errors import InvalidEventError

EVENT_ID = "3f2b8c1e-6d4a-4e0f-9a7b-2c5d8e1f0a93"
JOB_ID = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
OTHER_ID = "5c3e7a10-9b2d-4f61-8e0a-1d2c3b4a5f60"
WHEN = "2024-05-01T12:00:00+00:00"


def _envelope(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": EVENT_ID,
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": WHEN,
        "job_id": JOB_ID,
        "correlation_id": OTHER_ID,
        "causation_id": OTHER_ID,
        "payload": payload,
    }


def catalog() -> dict[str, Any]:
    return _envelope(
        "catalog.parsed",
        {
            "image_group_id": "group-1",
            "roles": ["compute", "login"],
            "role_images": {"login": "login-v2.img"},
            "catalog_name": "omnia",
            "catalog_version": "1.7",
        },
    )


def stage() -> dict[str, Any]:
    return _envelope(
        "stage.finished",
        {
            "stage": "deploy",
            "outcome": "failed",
            "image_group_id": "group-1",
            "attempt": 1,
            "request_event_id": OTHER_ID,
            "error_code": "E_TIMEOUT",
            "error_summary": "node n2 did not answer",
            "result_detail": {"nodes": ["n1", "n2"]},
        },
    )


def deploy_requested() -> dict[str, Any]:
    return _envelope(
        "deploy.requested",
        {
            "image_group_id": "group-1",
            "attempt": 1,
            "images": [{"role": "compute", "image_name": "compute.img"}],
        },
    )


def pxe_boot_requested() -> dict[str, Any]:
    return _envelope("pxe_boot.requested", {"image_group_id": "group-1", "attempt": 1})


def validate_requested() -> dict[str, Any]:
    return _envelope("validate.requested", {"image_group_id": "group-1", "attempt": 1})


SAMPLES: dict[str, tuple[type[BaseModel], Any]] = {
    "catalog.parsed": (CatalogParsedEvent, catalog),
    "stage.finished": (StageFinishedEvent, stage),
    "deploy.requested": (DeployRequestedEvent, deploy_requested),
    "pxe_boot.requested": (PxeBootRequestedEvent, pxe_boot_requested),
    "validate.requested": (ValidateRequestedEvent, validate_requested),
}


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `path` set to `value` (list indexes are numbers)."""
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def _without(body: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[key]
    del node[last]
    return changed


def _rejected_at(model: type[BaseModel], body: dict[str, Any]) -> set[str]:
    """The dotted locations pydantic names; fails the test when the body is accepted."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(str(part) for part in err["loc"]) for err in caught.value.errors()}


# ---------------------------------------------------------------------------------------
# Valid samples, and unknown fields at every level
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_complete_valid_event_of_each_type_is_accepted(name: str) -> None:
    model, sample = SAMPLES[name]

    parsed = model.model_validate(sample())

    assert parsed.model_dump(mode="json")["event_type"] == name


def test_an_envelope_with_only_its_required_fields_is_accepted() -> None:
    body = _without(_without(catalog(), "correlation_id"), "causation_id")

    parsed = CatalogParsedEvent.model_validate(body)

    assert (parsed.correlation_id, parsed.causation_id) == (None, None)
    assert parsed.ids() == (EVENT_ID, JOB_ID)


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("catalog.parsed", ""),
        ("catalog.parsed", "payload"),
        ("stage.finished", ""),
        ("stage.finished", "payload"),
        ("deploy.requested", ""),
        ("deploy.requested", "payload"),
        ("deploy.requested", "payload.images.0"),
        ("pxe_boot.requested", "payload"),
        ("validate.requested", "payload"),
    ],
)
def test_an_unknown_field_is_rejected_at_every_level(name: str, where: str) -> None:
    model, sample = SAMPLES[name]
    body = sample()
    path = f"{where}.surprise" if where else "surprise"

    assert path in _rejected_at(model, _with(body, path, "x"))


@pytest.mark.parametrize(
    "field", ["event_id", "event_type", "schema_version", "occurred_at", "job_id", "payload"]
)
def test_each_required_envelope_field_is_required(field: str) -> None:
    assert field in _rejected_at(StageFinishedEvent, _without(stage(), field))


def test_an_event_type_other_than_the_models_is_rejected() -> None:
    assert "event_type" in _rejected_at(
        CatalogParsedEvent, _with(catalog(), "event_type", "stage.finished")
    )


# ---------------------------------------------------------------------------------------
# schema_version, occurred_at, UUIDs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 0, "1", True, 1.0, None])
def test_schema_version_must_be_the_integer_one(version: object) -> None:
    assert "schema_version" in _rejected_at(
        CatalogParsedEvent, _with(catalog(), "schema_version", version)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00+00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (
            "2024-05-01T17:30:00.250+05:30",
            datetime(
                2024, 5, 1, 17, 30, 0, 250000, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
        ),
        ("2024-05-01T05:00:00-07:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_occurred_at_accepts_rfc3339_timestamps_with_an_offset(
    text: str, expected: datetime
) -> None:
    parsed = CatalogParsedEvent.model_validate(_with(catalog(), "occurred_at", text))

    assert parsed.occurred_at.utcoffset() is not None
    assert parsed.occurred_at == expected


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00",  # naive
        "2024-05-01",  # a date
        1714564800,  # epoch seconds
        1714564800.5,
        "1714564800",
        "20240501T120000Z",  # ISO 8601 basic format
        "2024-W18-3T12:00:00+00:00",  # ISO 8601 week date
        "2024-05-01T12:00+00:00",  # no seconds
        "2024-05-01T12:00:00+0000",  # offset without a colon
        "2024-13-01T12:00:00Z",  # no such month
        "yesterday",
        None,
    ],
)
def test_occurred_at_rejects_anything_but_an_rfc3339_string_with_an_offset(
    value: object,
) -> None:
    assert "occurred_at" in _rejected_at(CatalogParsedEvent, _with(catalog(), "occurred_at", value))


def test_occurred_at_rejection_says_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="timestamp needs a UTC offset"):
        CatalogParsedEvent.model_validate(_with(catalog(), "occurred_at", "2024-05-01T12:00:00"))


@pytest.mark.parametrize(
    ("model", "sample", "path"),
    [
        (CatalogParsedEvent, catalog, "event_id"),
        (CatalogParsedEvent, catalog, "job_id"),
        (CatalogParsedEvent, catalog, "correlation_id"),
        (CatalogParsedEvent, catalog, "causation_id"),
        (StageFinishedEvent, stage, "payload.request_event_id"),
    ],
)
@pytest.mark.parametrize(
    "value", ["not-a-uuid", "", "3f2b8c1e-6d4a-4e0f-9a7b", 12345, ["x"], {"id": EVENT_ID}]
)
def test_uuid_fields_reject_non_uuids_and_non_strings(
    model: type[BaseModel], sample: Any, path: str, value: object
) -> None:
    assert path in _rejected_at(model, _with(sample(), path, value))


@pytest.mark.parametrize("path", ["event_id", "job_id"])
def test_required_uuid_fields_reject_null(path: str) -> None:
    assert path in _rejected_at(CatalogParsedEvent, _with(catalog(), path, None))


# ---------------------------------------------------------------------------------------
# catalog.parsed payload
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles",
    [
        [],
        ["compute", "compute"],
        [""],
        ["x" * 129],
        [" compute"],
        ["compute "],
        ["com\tpute"],
        ["com\u2028pute"],
        [7],
        "compute",
    ],
)
def test_roles_must_be_a_non_empty_unique_list_of_clean_short_names(roles: object) -> None:
    rejected = _rejected_at(CatalogParsedEvent, _with(catalog(), "payload.roles", roles))

    assert any(loc.startswith("payload.roles") for loc in rejected)


def test_a_repeated_role_is_named_in_the_error() -> None:
    with pytest.raises(ValidationError, match=r"repeated: \['login'\]"):
        CatalogParsedEvent.model_validate(
            _with(catalog(), "payload.roles", ["compute", "login", "login"])
        )


def test_roles_of_one_and_of_128_characters_are_accepted() -> None:
    roles = ["x", "y" * 128]

    body = _with(_without(catalog(), "payload.role_images"), "payload.roles", roles)

    parsed = CatalogParsedEvent.model_validate(body)

    assert parsed.payload.roles == roles


def test_a_role_images_key_that_is_not_a_role_is_rejected() -> None:
    body = _with(catalog(), "payload.role_images", {"login": "l.img", "gpu": "gpu.img"})

    with pytest.raises(ValidationError, match=r"not in roles: \['gpu'\]"):
        CatalogParsedEvent.model_validate(body)


@pytest.mark.parametrize("name", ["", " login.img", "login.img ", "\tlogin.img", 3])
def test_a_role_images_value_must_be_a_trimmed_non_empty_string(name: object) -> None:
    body = _with(catalog(), "payload.role_images", {"login": name})

    rejected = _rejected_at(CatalogParsedEvent, body)

    assert any(loc.startswith("payload.role_images") for loc in rejected)


def test_role_images_may_be_left_out() -> None:
    parsed = CatalogParsedEvent.model_validate(_without(catalog(), "payload.role_images"))

    assert parsed.payload.role_images is None


@pytest.mark.parametrize(
    "group_id", ["", " group", "group ", "gr\noup", "gr\u200boup", "g" * 129, 42, None]
)
def test_the_image_group_id_must_be_a_clean_string_of_at_most_128_characters(
    group_id: object,
) -> None:
    rejected = _rejected_at(
        CatalogParsedEvent, _with(catalog(), "payload.image_group_id", group_id)
    )

    assert any(loc.startswith("payload.image_group_id") for loc in rejected)


def test_an_image_group_id_of_128_characters_is_accepted() -> None:
    parsed = CatalogParsedEvent.model_validate(
        _with(catalog(), "payload.image_group_id", "g" * 128)
    )

    assert parsed.payload.image_group_id == "g" * 128


@pytest.mark.parametrize("field", ["catalog_name", "catalog_version"])
def test_catalog_name_and_version_must_be_strings(field: str) -> None:
    assert f"payload.{field}" in _rejected_at(
        CatalogParsedEvent, _with(catalog(), f"payload.{field}", 17)
    )


# ---------------------------------------------------------------------------------------
# stage.finished payload
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stage_name"),
    [
        ("build-image", StageName.BUILD_IMAGE),
        ("build-image-x86_64", StageName.BUILD_IMAGE_X86_64),
        ("build-image-aarch64", StageName.BUILD_IMAGE_AARCH64),
        ("deploy", StageName.DEPLOY),
        ("pxe-boot", StageName.PXE_BOOT),
        ("restart", StageName.PXE_BOOT),
        ("validate", StageName.VALIDATE),
    ],
)
def test_every_contract_stage_is_accepted_and_restart_means_pxe_boot(
    text: str, stage_name: StageName
) -> None:
    parsed = StageFinishedEvent.model_validate(_with(stage(), "payload.stage", text))

    assert StageName.parse(parsed.payload.stage) is stage_name


@pytest.mark.parametrize(
    "text", ["Deploy", "pxe_boot", "build", "build-image-arm", "reboot", "", None, 1]
)
def test_a_stage_outside_the_contract_is_rejected(text: object) -> None:
    assert "payload.stage" in _rejected_at(
        StageFinishedEvent, _with(stage(), "payload.stage", text)
    )


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_both_outcomes_are_accepted(outcome: str) -> None:
    parsed = StageFinishedEvent.model_validate(_with(stage(), "payload.outcome", outcome))

    assert parsed.payload.outcome == outcome


@pytest.mark.parametrize("outcome", ["success", "FAILED", "passed", "", None, True])
def test_an_outcome_other_than_succeeded_or_failed_is_rejected(outcome: object) -> None:
    assert "payload.outcome" in _rejected_at(
        StageFinishedEvent, _with(stage(), "payload.outcome", outcome)
    )


@pytest.mark.parametrize("attempt", [1, 2, 1000, 2**31 - 1])
def test_an_attempt_of_one_or_more_is_accepted(attempt: int) -> None:
    parsed = StageFinishedEvent.model_validate(_with(stage(), "payload.attempt", attempt))

    assert parsed.payload.attempt == attempt


@pytest.mark.parametrize("attempt", [0, -1, 1.0, 1.5, "1", True])
def test_an_attempt_must_be_an_integer_of_at_least_one(attempt: object) -> None:
    assert "payload.attempt" in _rejected_at(
        StageFinishedEvent, _with(stage(), "payload.attempt", attempt)
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_attempt_past_a_32_bit_column_is_refused_in_every_message(name: str) -> None:
    model, sample = SAMPLES[name]

    assert "payload.attempt" in _rejected_at(model, _with(sample(), "payload.attempt", 2**31))


def test_a_follow_on_group_id_or_role_longer_than_its_column_is_refused() -> None:
    long = "g" * 129
    assert "payload.image_group_id" in _rejected_at(
        PxeBootRequestedEvent, _with(pxe_boot_requested(), "payload.image_group_id", long)
    )
    assert "payload.images.0.role" in _rejected_at(
        DeployRequestedEvent, _with(deploy_requested(), "payload.images.0.role", long)
    )


@pytest.mark.parametrize("path", ["event_id", "job_id", "correlation_id", "causation_id"])
def test_a_uuid_longer_than_its_longest_spelling_is_refused_by_its_length(path: str) -> None:
    with pytest.raises(ValidationError, match="a UUID string is at most 45 characters"):
        StageFinishedEvent.model_validate(_with(stage(), path, "0" * 46))


def test_a_timestamp_longer_than_its_bound_is_refused_with_the_bound() -> None:
    body = _with(stage(), "occurred_at", "2024-05-01T12:00:00." + "1" * 40 + "+00:00")

    with pytest.raises(ValidationError, match="at most 40 characters"):
        StageFinishedEvent.model_validate(body)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_result_detail_holding_nan_or_infinity_is_refused(value: float) -> None:
    body = _with(stage(), "payload.result_detail", {"ratio": [value]})

    with pytest.raises(ValidationError, match="must not hold NaN or Infinity"):
        StageFinishedEvent.model_validate(body)


@pytest.mark.parametrize(
    ("name", "path", "value"),
    [
        ("deploy.requested", "payload.attempt", "1"),
        ("deploy.requested", "payload.images.0.role", 1),
        ("pxe_boot.requested", "payload.image_group_id", 1),
        ("validate.requested", "payload.attempt", True),
    ],
)
def test_follow_on_payload_fields_are_strictly_typed(name: str, path: str, value: object) -> None:
    model, sample = SAMPLES[name]

    assert path in _rejected_at(model, _with(sample(), path, value))


def _detail_of_size(size: int) -> dict[str, str]:
    overhead = len(json.dumps({"d": ""}, separators=(",", ":")))
    detail = {"d": "x" * (size - overhead)}
    assert len(json.dumps(detail, separators=(",", ":")).encode()) == size
    return detail


def test_a_result_detail_of_exactly_64_kib_as_json_is_accepted() -> None:
    detail = _detail_of_size(MAX_RESULT_DETAIL_BYTES)

    parsed = StageFinishedEvent.model_validate(_with(stage(), "payload.result_detail", detail))

    assert parsed.payload.result_detail == detail
    assert MAX_RESULT_DETAIL_BYTES == 65536


def test_a_result_detail_one_byte_over_64_kib_is_rejected_with_its_size() -> None:
    body = _with(stage(), "payload.result_detail", _detail_of_size(MAX_RESULT_DETAIL_BYTES + 1))

    with pytest.raises(ValidationError, match="65537 bytes as JSON; at most 65536"):
        StageFinishedEvent.model_validate(body)


@pytest.mark.parametrize("detail", [["a"], "text", 3])
def test_a_result_detail_must_be_an_object(detail: object) -> None:
    rejected = _rejected_at(StageFinishedEvent, _with(stage(), "payload.result_detail", detail))

    assert any(loc.startswith("payload.result_detail") for loc in rejected)


def test_a_stage_result_needs_only_stage_and_outcome() -> None:
    body = _envelope("stage.finished", {"stage": "validate", "outcome": "succeeded"})

    parsed = StageFinishedEvent.model_validate(body)

    assert (parsed.payload.attempt, parsed.payload.image_group_id) == (None, None)


# ---------------------------------------------------------------------------------------
# parse(): the task call as a whole
# ---------------------------------------------------------------------------------------


def test_parse_returns_the_validated_envelope() -> None:
    parsed = parse(CatalogParsedEvent, (), {"event": catalog()})

    assert isinstance(parsed, CatalogParsedEvent)
    assert parsed.payload.image_group_id == "group-1"


def test_parse_refuses_positional_arguments() -> None:
    with pytest.raises(InvalidEventError, match="positional arguments are not accepted"):
        parse(CatalogParsedEvent, (catalog(),), {})


def test_parse_refuses_extra_keyword_arguments_and_names_them() -> None:
    with pytest.raises(InvalidEventError, match=r"unexpected keyword arguments \['extra', 'x'\]"):
        parse(CatalogParsedEvent, (), {"event": catalog(), "x": 1, "extra": 2})


def test_parse_refuses_a_call_without_the_event() -> None:
    with pytest.raises(InvalidEventError, match="missing keyword argument 'event'"):
        parse(CatalogParsedEvent, (), {})


@pytest.mark.parametrize(
    ("event", "kind"), [(["a"], "list"), ("{}", "str"), (None, "NoneType"), (3, "int")]
)
def test_parse_refuses_an_event_that_is_not_a_json_object(event: object, kind: str) -> None:
    with pytest.raises(InvalidEventError, match=f"event must be a JSON object, got {kind}$"):
        parse(CatalogParsedEvent, (), {"event": event})


def test_parse_reports_each_invalid_field_by_its_location() -> None:
    body = _with(_with(catalog(), "payload.roles", []), "schema_version", 2)

    with pytest.raises(InvalidEventError) as caught:
        parse(CatalogParsedEvent, (), {"event": body})

    text = str(caught.value)
    assert text.startswith("invalid CatalogParsedEvent: ")
    assert "schema_version: " in text
    assert "unsupported schema_version 2" in text
    assert "payload.roles: " in text
