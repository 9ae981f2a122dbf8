"""bench/run.py runs end to end: the throughput anchors on a real worker, ratios printed.

Timing belongs to the bench, not to tests: this only checks that it runs and reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_quick_throughput_prints_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "bench/run.py", "--quick", "--sections", "throughput"]
    argv += ["--events", "200", "--calm", "0", "--json", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bare Celery no-op" in done.stdout
    assert "build-image succeeded" in done.stdout
    figures = json.loads(out.read_text())["throughput"]
    assert set(figures["ratios"]) == {"observed", "catalog", "build"}
    assert all(ratio > 0 for ratio in figures["ratios"].values())
