"""`pip install -e .` (scripts/bootstrap.sh) installs the checkout without setuptools' warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

# setuptools ships no type information.
from setuptools.command.editable_wheel import editable_wheel  # type: ignore[import-untyped]
from setuptools.config.pyprojecttoml import apply_configuration  # type: ignore[import-untyped]
from setuptools.dist import Distribution  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]


def test_an_editable_install_is_a_plain_path_entry_not_the_import_hook_that_warns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # setuptools picks how to make the checkout importable from pyproject.toml's layout; its
    # import-hook strategy (for layouts it cannot prove simple) prints a "!!" warning block
    # on every install, the .pth strategy does not.
    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
        command = editable_wheel(dist)
        command.ensure_finalized()
        strategy = command._select_strategy(dist.get_name(), "py3-none-any", str(tmp_path))

    assert type(strategy).__name__ == "_StaticPth"
    assert [entry.resolve() for entry in strategy.path_entries] == [ROOT]
