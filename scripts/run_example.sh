#!/usr/bin/env bash
# The main job on a fresh machine: set up a virtual environment from the project's own files (.venv, reused;
# VENV=path for another), then preprocess real MRI volumes in parallel into an HDF5 cache on the embedded local
# cluster and read them back (examples/01_persist_imaging.py). Arguments go to the example (--help).
# The install is skipped when the environment is up to date: pyproject.toml unchanged since the last install
# (its hash is kept in $VENV/.installed-pyproject) and connectome_dask importable from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.installed-pyproject"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c "
import os, connectome_dask, scipy, nibabel, matplotlib
assert os.path.samefile(os.path.dirname(connectome_dask.__file__), 'connectome_dask')" 2>/dev/null; then
    echo "$VENV is up to date (pyproject.toml unchanged since its install): no reinstall"
else
    echo "installing connectome_dask and the example's packages (scipy, nibabel, matplotlib) into $VENV ..."
    log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e ".[examples]"; } \
            >"$log" 2>&1; then
        cat "$log" >&2
        echo "pip install failed (log: $log)" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
exec "$VENV/bin/python" examples/01_persist_imaging.py "$@"
