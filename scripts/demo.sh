#!/usr/bin/env bash
# Run it: installs the project into .venv and drives image groups through the whole flow,
# in one process, with no servers (SQLite and an in-memory broker). Extra args go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh 2>&1 | { grep -v "^WARNING: Location" >&2 || true; }
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "demo.sh: installing the project failed" >&2; exit 1; }
exec .venv/bin/imagegroups demo "$@"
