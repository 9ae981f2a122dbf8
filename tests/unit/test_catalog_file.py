"""The Omnia catalog reader of `imagegroups publish catalog-parsed --catalog`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workers.cli.catalog_file import CatalogFile, CatalogFileError, read_catalog

FIXTURES = Path(__file__).parents[1] / "fixtures" / "catalogs"


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def catalog(identifier: Any = "grp", layers: Any = None) -> dict[str, Any]:
    return {
        "Catalog": {
            "Identifier": identifier,
            "FunctionalLayer": [{"Name": "compute"}] if layers is None else layers,
        }
    }


# Accepted catalogs ---------------------------------------------------------------------


def test_tiny_fixture_names_the_group_and_its_roles_sorted() -> None:
    read = read_catalog(FIXTURES / "tiny_catalog.json")

    assert read == CatalogFile(
        image_group_id="tiny-cluster-v1",
        roles=("login_node_x86_64", "slurm_node_x86_64"),
        catalog_name="tiny",
        catalog_version="1.0",
    )


def test_lowercase_fixture_is_read_and_its_unusable_layers_are_skipped() -> None:
    read = read_catalog(FIXTURES / "lowercase_catalog.json")

    assert read.image_group_id == "k8s-cluster-v2"
    assert read.roles == ("service_kube_control_plane_x86_64", "service_kube_node_x86_64")
    assert (read.catalog_name, read.catalog_version) == ("k8s", "2.0")


def test_an_identifier_of_exactly_128_characters_is_accepted(tmp_path: Path) -> None:
    read = read_catalog(write(tmp_path, catalog("a" * 128)))

    assert read.image_group_id == "a" * 128


def test_repeated_layer_names_give_one_role_each(tmp_path: Path) -> None:
    layers = [{"Name": "b"}, {"Name": "a"}, {"Name": "b"}, {"Name": "a"}]

    read = read_catalog(write(tmp_path, catalog(layers=layers)))

    assert read.roles == ("a", "b")


def test_layers_without_a_name_are_skipped_when_another_has_one(tmp_path: Path) -> None:
    layers = [{"Name": ""}, {"Name": "   "}, {}, {"Name": None}, 7, "x", {"Name": "compute"}]

    read = read_catalog(write(tmp_path, catalog(layers=layers)))

    assert read.roles == ("compute",)


def test_name_and_version_are_optional(tmp_path: Path) -> None:
    read = read_catalog(write(tmp_path, catalog()))

    assert (read.catalog_name, read.catalog_version) == (None, None)


# Rejected catalogs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "no Catalog"),
        ([], "no Catalog"),
        ({"Catalog": "x"}, "Catalog must be an object"),
        ({"Catalog": ["x"]}, "Catalog must be an object"),
        ({"Catalog": {"FunctionalLayer": [{"Name": "a"}]}}, "no Identifier"),
        (catalog(""), "Identifier is empty"),
        (catalog("   "), "Identifier is empty"),
        (catalog("\t\n"), "Identifier is empty"),
        (catalog("a" * 129), "129 characters; at most 128"),
        (catalog(42), "Identifier must be a string"),
        (catalog(" padded "), "leading or trailing whitespace"),
        (catalog(layers=[]), "no usable role"),
        (catalog(layers=[{"Name": ""}, "x", {}]), "no usable role"),
        (catalog(layers="compute"), "no usable role"),
        ({"Catalog": {"Identifier": "grp"}}, "no usable role"),
        (catalog(layers=[{"Name": "r" * 129}]), "at most 128"),
    ],
    ids=[
        "empty-object",
        "top-level-list",
        "catalog-string",
        "catalog-list",
        "no-identifier",
        "empty-identifier",
        "blank-identifier",
        "whitespace-identifier",
        "129-char-identifier",
        "number-identifier",
        "untrimmed-identifier",
        "no-layers",
        "only-unusable-layers",
        "layers-not-a-list",
        "no-functional-layer-key",
        "role-too-long",
    ],
)
def test_a_catalog_that_cannot_name_a_group_is_rejected_with_the_reason(
    tmp_path: Path, document: Any, message: str
) -> None:
    with pytest.raises(CatalogFileError, match=message):
        read_catalog(write(tmp_path, document))


def test_a_missing_file_is_rejected_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    with pytest.raises(CatalogFileError, match=r"not found: .*nope\.json"):
        read_catalog(missing)


@pytest.mark.parametrize("text", ["", "{not json", "Catalog: x"], ids=["empty", "broken", "yaml"])
def test_a_file_that_is_not_json_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CatalogFileError, match="is not JSON"):
        read_catalog(path)


def test_a_directory_is_rejected_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match="cannot read"):
        read_catalog(tmp_path)
