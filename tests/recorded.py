"""What an aggregate recorded, in the shapes tests compare (the events stay the domain's)."""

from __future__ import annotations

from domain import ImageGroup, StageName, StageRequested, StatusChanged, Transition


def moves(group: ImageGroup) -> list[Transition]:
    """The transitions the group recorded since its events were last collected."""
    return [event.transition for event in group.recorded(StatusChanged)]


def requests(group: ImageGroup) -> list[tuple[StageName, int]]:
    """The (stage, attempt) of each stage the group requested since."""
    return [(event.stage, event.attempt) for event in group.recorded(StageRequested)]
