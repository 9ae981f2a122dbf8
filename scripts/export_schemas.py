"""Write docs/events/<name>.schema.json for every message model; `--check` finds stale files."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from workers.edge.accept import SCHEMAS, json_schema

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "events"
SUFFIX = ".schema.json"


def render(name: str) -> str:
    return json.dumps(json_schema(SCHEMAS[name]), indent=2, sort_keys=True) + "\n"


def stale_files(out: Path) -> list[Path]:
    """Files that are missing, differ from the models, or belong to no model any more."""
    stale = [
        out / f"{name}{SUFFIX}"
        for name in sorted(SCHEMAS)
        if not (out / f"{name}{SUFFIX}").is_file()
        or (out / f"{name}{SUFFIX}").read_text(encoding="utf-8") != render(name)
    ]
    expected = {f"{name}{SUFFIX}" for name in SCHEMAS}
    orphans = sorted(p for p in out.glob(f"*{SUFFIX}") if p.name not in expected)
    return stale + orphans


def export(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(SCHEMAS):
        path = out / f"{name}{SUFFIX}"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def regenerate_command(out: Path) -> str:
    """This script under this interpreter, by full paths, so it works pasted anywhere."""
    argv = [sys.executable, str(Path(__file__).resolve())]
    if out.resolve() != DEFAULT_OUT:
        argv += ["--out", str(out.resolve())]
    return shlex.join(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print(f"regenerate them with: {regenerate_command(args.out)}", file=sys.stderr)
        return 1 if stale else 0
    for path in export(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
