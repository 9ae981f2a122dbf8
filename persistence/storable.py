"""Text every supported database stores: PostgreSQL refuses NUL and lone surrogates outright.

Free text from the pipeline (error codes and summaries, result details, catalog names) is
kept, not refused: a deploy failure whose summary holds a NUL must still fail its group.
A NUL becomes the four characters `\\x00`, a lone surrogate its `\\udXXX` escape.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from domain import CatalogReservation, StageRecord, Transition


def text(value: str) -> str:
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def optional_text(value: str | None) -> str | None:
    return None if value is None else text(value)


def json_doc(value: Any) -> Any:
    """A JSON document with every key and string made storable (JSONB refuses \\u0000 too)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(str(k)): json_doc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_doc(v) for v in value]
    return value


def stage(record: StageRecord) -> StageRecord:
    return replace(
        record,
        error_code=optional_text(record.error_code),
        error_summary=optional_text(record.error_summary),
        result_detail=None if record.result_detail is None else json_doc(record.result_detail),
    )


def reservation(held: CatalogReservation) -> CatalogReservation:
    return replace(
        held,
        catalog_name=optional_text(held.catalog_name),
        catalog_version=optional_text(held.catalog_version),
    )


def transition(move: Transition) -> Transition:
    cause = move.cause
    if cause.error_code is None and cause.error_summary is None:
        return move
    stored = replace(
        cause,
        error_code=optional_text(cause.error_code),
        error_summary=optional_text(cause.error_summary),
    )
    return replace(move, cause=stored)
