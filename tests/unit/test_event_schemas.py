"""The committed JSON Schemas in docs/events match the models, and accept real events."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from domain import Image, ImageGroup, ImageGroupId, RoleName, StageName, StageRequested
from workers import outbox
from workers.edge.accept import SCHEMAS, json_schema
from workers.outbox import request_message

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = ROOT / "docs" / "events"
JOB_ID = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"
CAUSE_ID = "3f2b8c1e-6d4a-4e0f-9a7b-2c5d8e1f0a93"
CORRELATION_ID = "5c3e7a10-9b2d-4f61-8e0a-1d2c3b4a5f60"
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "export_schemas", ROOT / "scripts" / "export_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((EVENTS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _group(*roles: str) -> ImageGroup:
    images = [Image(str(uuid.uuid4()), RoleName(r), f"{r}.img") for r in roles]
    return ImageGroup.create(ImageGroupId("group-1"), JOB_ID, images, event_id=CAUSE_ID, at=AT)


def _follow_on(stage: StageName, attempt: int = 1) -> dict[str, Any]:
    message = request_message(
        _group("compute", "login"),
        StageRequested(stage, attempt, CAUSE_ID, AT, CORRELATION_ID),
        event_id=str(uuid.uuid4()),
    )
    return message.body


def _catalog_parsed() -> dict[str, Any]:
    return outbox.catalog_parsed(
        JOB_ID,
        "group-1",
        ["compute", "login"],
        {"login": "login-v2.img"},
        catalog_name="omnia",
        catalog_version="1.7",
        correlation_id=CORRELATION_ID,
    )


def _stage_finished() -> dict[str, Any]:
    return outbox.stage_finished(
        JOB_ID,
        "restart",
        "failed",
        image_group_id="group-1",
        attempt=2,
        request_event_id=str(uuid.uuid4()),
        detail={"nodes": ["n1"], "retries": 3},
        error_code="E_PXE",
        error_summary="n1 did not boot",
        correlation_id=CORRELATION_ID,
        causation_id=CAUSE_ID,
    )


SAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    "catalog.parsed": _catalog_parsed,
    "stage.finished": _stage_finished,
    "deploy.requested": lambda: _follow_on(StageName.DEPLOY),
    "pxe_boot.requested": lambda: _follow_on(StageName.PXE_BOOT),
    "validate.requested": lambda: _follow_on(StageName.VALIDATE, attempt=3),
}


def test_there_is_a_sample_and_a_committed_file_for_every_model() -> None:
    assert set(SAMPLES) == set(SCHEMAS)
    assert {p.name for p in EVENTS_DIR.glob("*.schema.json")} == {
        f"{name}.schema.json" for name in SCHEMAS
    }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_committed_schema_equals_the_current_models_schema(name: str) -> None:
    committed = (EVENTS_DIR / f"{name}.schema.json").read_text(encoding="utf-8")

    current = json.dumps(json_schema(SCHEMAS[name]), indent=2, sort_keys=True) + "\n"

    assert committed == current, f"re-run scripts/export_schemas.py ({name} is stale)"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_committed_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = json.loads((EVENTS_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))

    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_sample_event_validates_against_both_the_model_and_the_json_schema(name: str) -> None:
    body = SAMPLES[name]()

    errors = [e.message for e in _validator(name).iter_errors(body)]

    assert errors == []
    assert SCHEMAS[name].model_validate(body).model_dump(mode="json")["event_type"] == name


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("catalog.parsed", lambda b: b.update(surprise=1)),
        ("catalog.parsed", lambda b: b["payload"].update(surprise=1)),
        ("catalog.parsed", lambda b: b.update(schema_version=2)),
        ("catalog.parsed", lambda b: b.update(schema_version=True)),
        ("catalog.parsed", lambda b: b.update(event_id="not-a-uuid")),
        ("catalog.parsed", lambda b: b["payload"].update(roles=["a", "a"])),
        ("catalog.parsed", lambda b: b["payload"].update(roles=[])),
        ("catalog.parsed", lambda b: b["payload"].update(image_group_id=" padded")),
        ("stage.finished", lambda b: b["payload"].update(stage="reboot")),
        ("stage.finished", lambda b: b["payload"].update(outcome="success")),
        ("stage.finished", lambda b: b["payload"].update(attempt=0)),
        ("stage.finished", lambda b: b["payload"].update(result_detail=["x"])),
        ("stage.finished", lambda b: b.pop("occurred_at")),
        ("deploy.requested", lambda b: b["payload"]["images"][0].update(surprise=1)),
        ("pxe_boot.requested", lambda b: b.update(event_type="deploy.requested")),
        ("validate.requested", lambda b: b["payload"].pop("attempt")),
    ],
)
def test_the_json_schema_rejects_what_the_model_rejects(
    name: str, change: Callable[[dict[str, Any]], object]
) -> None:
    body = SAMPLES[name]()
    change(body)

    assert list(_validator(name).iter_errors(body)) != []
    with pytest.raises(ValueError):
        SCHEMAS[name].model_validate(body)


def test_the_export_script_check_passes_on_the_committed_files() -> None:
    script = _load_script()

    assert script.stale_files(EVENTS_DIR) == []
    assert script.main(["--check"]) == 0


def test_the_export_script_check_fails_listing_missing_changed_and_orphaned_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _load_script()
    assert script.main(["--out", str(tmp_path)]) == 0
    assert script.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "stage.finished.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "deploy.requested.schema.json").unlink()
    (tmp_path / "retired.schema.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()

    assert script.main(["--check", "--out", str(tmp_path)]) == 1

    err = capsys.readouterr().err
    for name in ("stage.finished", "deploy.requested", "retired"):
        assert f"{name}.schema.json" in err
    assert "catalog.parsed" not in err
