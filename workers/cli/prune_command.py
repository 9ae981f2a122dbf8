"""`imagegroups prune`: delete now what retention would delete (persistence/retention.py)."""

from __future__ import annotations

import argparse

from workers.cli.output import print_json, print_table
from workers.runtime.housekeeping import prune_now
from workers.runtime.root import runtime


def prune(args: argparse.Namespace) -> int:
    removed = prune_now(runtime())
    if args.json:
        print_json(removed)
    else:
        print_table(["TABLE", "ROWS REMOVED"], sorted(removed.items()))
    return 0
