"""The repository documents itself: its links resolve inside it, and nothing points outside it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Paths beside the repository (a clone has nothing there), spelled as text or as a Path.
OUTSIDE = re.compile(r'\.\./shared|\.parent\s*/\s*"shared"|CONTRACT\.md|DESIGN\.md')
#: Files that still name one of OUTSIDE, each to be pointed at docs/ by the change that owns it.
_SKIPPED_DIRS = {".git", ".venv", "__pycache__", "build", "dist", "node_modules"}
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def repo_text_files() -> dict[str, str]:
    """Every text file of the working tree (tracked or not), by path relative to the repo."""
    found = {}
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        skipped = any(p in _SKIPPED_DIRS or p.endswith((".egg-info", "_cache")) for p in parts)
        if skipped or not path.is_file() or path == Path(__file__):
            continue  # this file names OUTSIDE to look for it
        try:
            found["/".join(parts)] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return found


def relative_links(markdown: Path) -> list[str]:
    targets = _LINK.findall(markdown.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_docs_an_operator_needs_are_in_the_repository() -> None:
    names = {path.name for path in DOCS}
    assert {"README.md", "contract.md", "design.md", "runbook.md"} <= names


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_to_a_file_in_the_repository(markdown: Path) -> None:
    broken = []
    for link in relative_links(markdown):
        target = (markdown.parent / link.split("#", 1)[0]).resolve()
        if not target.is_relative_to(REPO) or not target.exists():
            broken.append(link)
    assert broken == []


def test_no_file_points_at_documents_outside_the_repository() -> None:
    naming = {path for path, text in repo_text_files().items() if OUTSIDE.search(text)}
    assert naming == set(), "point these at docs/ instead"


def fresh_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` pasted into a new shell: no venv on PATH, no project settings."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", command],
        cwd=cwd,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readmes_schema_check_command_works_pasted_from_the_top_directory() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [command] = re.findall(r"`([^`]*scripts/export_schemas\.py --check)`", readme)

    done = fresh_shell(command, REPO)

    assert done.returncode == 0, done.stderr


def test_the_schema_export_prints_a_regenerate_command_that_works_pasted_anywhere(
    tmp_path: Path,
) -> None:
    out = tmp_path / "schemas"
    out.mkdir()
    script = str(REPO / "scripts" / "export_schemas.py")
    stale = subprocess.run(
        [sys.executable, script, "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    printed = re.search(r"^regenerate them with: (.+)$", stale.stderr, re.MULTILINE)
    assert stale.returncode == 1 and printed is not None, stale.stderr

    regenerated = fresh_shell(printed.group(1), tmp_path)
    fresh = fresh_shell(printed.group(1) + " --check", tmp_path)

    assert regenerated.returncode == 0, regenerated.stderr
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (REPO / "docs" / "events").iterdir()
    )
