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


@pytest.mark.timeout(300)
def test_quick_anchors_print_every_ratio_with_every_event_verified(tmp_path: Path) -> None:
    out, n = tmp_path / "anchors.json", 20
    argv = [sys.executable, "bench/run.py", "--quick", "--sections", "anchors", "--repeat", "1"]
    argv += ["--events", str(n), "--calm", "0", "--json", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=290)
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    ratios = {"ours/peer", "ours/pg-limit", "ours/celery-ceiling", "ours/commit-ceiling"}
    for ratio in ratios:
        assert f"\n{ratio} " in report
    assert "machine: " in report and "PostgreSQL " in report
    assert f"naive peer catalog.parsed: catalogs {n}/{n}" in report
    assert f"DEPLOYING {n}/{n}, images {2 * n}/{2 * n}, history {n}/{n}" in report
    assert f"catalog.parsed: applied {n}/{n}, dead letters 0" in report
    assert f"statements/event, replayed {n}/{n}" in report  # the pg-limit's catalog phase
    assert report.count(f"DEPLOYING {n}/{n}") == 3  # the peer, ours and the pg-limit replay
    assert f"one commit: committed {n}/{n}" in report
    assert "\ncommit-ceiling/peer " in report
    figures = json.loads(out.read_text())["anchors"]
    assert set(figures["ratios"]) == ratios
    assert set(figures["commit-ceiling/peer"]) == {"catalog", "build"}
    for kinds in figures["ratios"].values():
        assert set(kinds) == {"catalog", "build"}
        assert all(pick > 0 for ratio in kinds.values() for pick in ratio.values())
