"""The `imagegroups` command line: operators' view of groups, events and dead letters."""

from __future__ import annotations

# The entry point is workers.cli.main:main; it is not re-exported here, so that the name
# `workers.cli.main` always means the module.
__all__: list[str] = []
