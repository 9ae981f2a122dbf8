"""A git revision of this repository exported to a temporary directory (git archive)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def exported(rev: str, prefix: str) -> Iterator[Path]:
    """The tree of `rev`, removed on exit; `prefix` names the temporary directory."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)
