"""Stand-ins for what lies outside the worker: the pipeline (`imagegroups simulate`) and the
one-process demo (`imagegroups demo`). The production worker never imports this package;
only those two commands do, when they run (checked by tests/unit/test_architecture.py)."""

from __future__ import annotations

__all__: list[str] = []
