"""CatalogReservation: the roles a parsed catalog builds and the image name of each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import count

import pytest

from domain.model import CatalogReservation, Image, ImageGroupId, RoleName

GROUP_ID = ImageGroupId("group-1")
JOB_ID = "0b6a6f0e-1b8e-4a53-9f57-6a8c4c1f0c11"


def _roles(*names: str) -> tuple[RoleName, ...]:
    return tuple(RoleName(name) for name in names)


def _reservation(*roles: str, role_images: Mapping[str, str] | None = None) -> CatalogReservation:
    return CatalogReservation(
        image_group_id=GROUP_ID,
        job_id=JOB_ID,
        roles=_roles(*roles),
        role_images={} if role_images is None else role_images,
    )


def _sequential_ids(prefix: str) -> Callable[[], str]:
    numbers: Iterator[int] = count(1)
    return lambda: f"{prefix}-{next(numbers)}"


def test_catalog_without_roles_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"at least one role"):
        CatalogReservation(image_group_id=GROUP_ID, job_id=JOB_ID, roles=())


def test_catalog_with_duplicate_roles_is_rejected_naming_them() -> None:
    with pytest.raises(ValueError, match=r"roles must be unique") as caught:
        _reservation("compute", "login", "compute")

    assert "'compute'" in str(caught.value)


def test_role_images_key_that_is_not_a_role_is_rejected_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"not in roles") as caught:
        _reservation("compute", role_images={"compute": "c.img", "gpu-node": "gpu.img"})

    message = str(caught.value)
    assert "'gpu-node'" in message
    assert "'compute'" not in message


def test_every_unknown_role_images_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"\['alpha', 'zeta'\]"):
        _reservation("compute", role_images={"zeta": "z.img", "alpha": "a.img"})


def test_role_without_explicit_image_gets_role_dot_img() -> None:
    reservation = _reservation("compute", "login")

    assert reservation.image_name(RoleName("compute")) == "compute.img"
    assert reservation.image_name(RoleName("login")) == "login.img"


def test_explicit_image_names_are_used_and_other_roles_keep_the_default() -> None:
    reservation = _reservation(
        "compute", "login", role_images={"compute": "rocky9-compute-2024.05.img"}
    )

    assert reservation.image_name(RoleName("compute")) == "rocky9-compute-2024.05.img"
    assert reservation.image_name(RoleName("login")) == "login.img"


def test_images_uses_the_id_factory_once_per_role_in_role_order() -> None:
    reservation = _reservation("compute", "login", "storage", role_images={"login": "l.img"})

    images = reservation.images(_sequential_ids("img"))

    assert images == (
        Image("img-1", RoleName("compute"), "compute.img"),
        Image("img-2", RoleName("login"), "l.img"),
        Image("img-3", RoleName("storage"), "storage.img"),
    )


def test_images_calls_the_factory_anew_for_each_call() -> None:
    reservation = _reservation("compute")
    new_id = _sequential_ids("x")

    first = reservation.images(new_id)
    second = reservation.images(new_id)

    assert [image.id for image in first] == ["x-1"]
    assert [image.id for image in second] == ["x-2"]


def test_role_images_cannot_be_changed_after_reservation() -> None:
    source = {"compute": "c.img"}
    reservation = _reservation("compute", role_images=source)

    source["compute"] = "changed.img"

    assert reservation.image_name(RoleName("compute")) == "c.img"
    with pytest.raises(TypeError):
        reservation.role_images["compute"] = "other.img"  # type: ignore[index]


def test_same_catalog_compares_group_job_roles_and_images_but_not_metadata() -> None:
    base = _reservation("compute", role_images={"compute": "c.img"})
    with_metadata = CatalogReservation(
        image_group_id=GROUP_ID,
        job_id=JOB_ID,
        roles=_roles("compute"),
        role_images={"compute": "c.img"},
        catalog_name="rocky",
        catalog_version="9.4",
    )

    assert base.same_catalog(with_metadata)
    assert not base.same_catalog(_reservation("compute"))
    assert not base.same_catalog(_reservation("compute", "login", role_images={"compute": "c.img"}))
    other_job = CatalogReservation(
        image_group_id=GROUP_ID,
        job_id="another-job",
        roles=_roles("compute"),
        role_images={"compute": "c.img"},
    )
    assert not base.same_catalog(other_job)
