"""A parsed catalog as reserved for one job: the group id it claims and the roles it builds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from domain.model import Image
from domain.values import ImageGroupId, InvalidValueError, RoleName


def check_roles(roles: Sequence[str], role_images: Mapping[str, str] | None) -> None:
    """The catalog's rule: at least one role, each once, and images only for those roles."""
    if not roles:
        raise InvalidValueError("a catalog needs at least one role")
    repeated = sorted({r for r in roles if roles.count(r) > 1})
    if repeated:
        raise InvalidValueError(f"roles must be unique; repeated: {repeated}")
    unknown = sorted(set(role_images or {}) - set(roles))
    if unknown:
        raise InvalidValueError(f"role_images names roles that are not in roles: {unknown}")


@dataclass(frozen=True, slots=True)
class CatalogReservation:
    """Holding this row makes `image_group_id` belong to `job_id` and to no other job."""

    image_group_id: ImageGroupId
    job_id: str
    roles: tuple[RoleName, ...]
    role_images: Mapping[str, str] = field(default_factory=dict)
    catalog_name: str | None = None
    catalog_version: str | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check_roles([r.value for r in self.roles], self.role_images)
        object.__setattr__(self, "role_images", MappingProxyType(dict(self.role_images)))

    def image_name(self, role: RoleName) -> str:
        return self.role_images.get(role.value, f"{role.value}.img")

    def images(self, new_id: Callable[[], str]) -> tuple[Image, ...]:
        return tuple(Image(new_id(), role, self.image_name(role)) for role in self.roles)

    def same_catalog(self, other: CatalogReservation) -> bool:
        return (
            self.image_group_id == other.image_group_id
            and self.job_id == other.job_id
            and self.roles == other.roles
            and dict(self.role_images) == dict(other.role_images)
        )
