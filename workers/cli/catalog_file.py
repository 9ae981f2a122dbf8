"""Read an Omnia catalog file: its Identifier names the image group, its layers the roles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain import MAX_ID_LENGTH, ImageGroupId, InvalidValueError, RoleName


class CatalogFileError(ValueError):
    """The catalog file cannot name an image group; the message says why and where."""


@dataclass(frozen=True, slots=True)
class CatalogFile:
    image_group_id: str
    roles: tuple[str, ...]
    catalog_name: str | None = None
    catalog_version: str | None = None


def read_catalog(path: str | Path) -> CatalogFile:
    """Parse the file; raise CatalogFileError for anything that cannot name a group."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogFileError(f"catalog file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogFileError(f"cannot read catalog file {source}: {exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CatalogFileError(f"catalog file {source} is not JSON: {exc}") from None
    return parse_catalog(document, source=str(source))


def parse_catalog(document: Any, *, source: str = "catalog") -> CatalogFile:
    catalog = _key(document, "Catalog") if isinstance(document, dict) else None
    if catalog is None:
        raise CatalogFileError(f"{source}: no Catalog object at the top level")
    if not isinstance(catalog, dict):
        raise CatalogFileError(f"{source}: Catalog must be an object, not {_kind(catalog)}")
    return CatalogFile(
        image_group_id=_identifier(catalog, source),
        roles=_roles(catalog, source),
        catalog_name=_text(_key(catalog, "Name")),
        catalog_version=_text(_key(catalog, "Version")),
    )


def _identifier(catalog: dict[str, Any], source: str) -> str:
    value = _key(catalog, "Identifier")
    if value is None:
        raise CatalogFileError(f"{source}: Catalog has no Identifier")
    if not isinstance(value, str):
        raise CatalogFileError(f"{source}: Catalog.Identifier must be a string, not {_kind(value)}")
    if not value.strip():
        raise CatalogFileError(f"{source}: Catalog.Identifier is empty")
    if len(value) > MAX_ID_LENGTH:
        raise CatalogFileError(
            f"{source}: Catalog.Identifier is {len(value)} characters; at most {MAX_ID_LENGTH}"
        )
    try:
        return ImageGroupId(value).value
    except InvalidValueError as exc:
        raise CatalogFileError(f"{source}: Catalog.Identifier: {exc}") from None


def _roles(catalog: dict[str, Any], source: str) -> tuple[str, ...]:
    """Sorted, unique layer names; entries that are not objects or have no name are skipped."""
    layers = _key(catalog, "FunctionalLayer")
    names: set[str] = set()
    for layer in layers if isinstance(layers, list) else []:
        name = _key(layer, "Name") if isinstance(layer, dict) else None
        if not isinstance(name, str) or not name.strip():
            continue
        try:
            names.add(RoleName(name).value)
        except InvalidValueError as exc:
            raise CatalogFileError(f"{source}: Catalog.FunctionalLayer: {exc}") from None
    if not names:
        raise CatalogFileError(
            f"{source}: Catalog.FunctionalLayer has no usable role (no entry with a Name)"
        )
    return tuple(sorted(names))


def _key(mapping: dict[str, Any], name: str) -> Any:
    """The value under the Omnia spelling, else under the all-lowercase one."""
    if name in mapping:
        return mapping[name]
    return mapping.get(name.lower())


def _text(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _kind(value: Any) -> str:
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
