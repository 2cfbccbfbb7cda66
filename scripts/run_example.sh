#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv from the project's own files, then persist the example MRI
# pipeline in parallel on the embedded local cluster and read it back (examples/01_persist_imaging.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[examples]"
exec "$VENV/bin/python" examples/01_persist_imaging.py "$@"
