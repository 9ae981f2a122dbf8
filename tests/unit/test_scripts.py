"""scripts/test.sh says what it runs: its banner names every test tier."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_test_banner_names_every_tier_that_has_tests() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    banner = re.search(r'^echo "== tests: (.+)"$', script, re.MULTILINE)
    assert banner is not None, "scripts/test.sh prints no '== tests:' banner"
    named = {tier.strip() for tier in banner.group(1).split(",")}
    tiers = {d.name for d in (ROOT / "tests").iterdir() if d.is_dir() and any(d.glob("test_*.py"))}
    assert named == tiers
