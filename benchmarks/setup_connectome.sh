#!/usr/bin/env bash
# Make benchmarks/.connectome-venv: connectome 0.10.0 in an environment of its own (its storage
# dependency tarn pins cloudpickle<2.3, which current dask refuses). numpy, scipy and h5py are pinned to
# the versions of the project's interpreter ($PROJECT_PYTHON, else python3) when it has them, so the
# same array code runs on both sides. Idempotent: an existing venv that imports everything is kept.
#
#   bash benchmarks/setup_connectome.sh            # PROJECT_PYTHON=/tmp/venv/bin/python to pin from it
set -euo pipefail
cd "$(dirname "$0")"
VENV=.connectome-venv
PROJECT_PYTHON=${PROJECT_PYTHON:-python3}
CHECK='import connectome, numpy, scipy.ndimage, h5py, importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("connectome", "tarn", "cloudpickle", "numpy", "scipy", "h5py")))'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    exit 0
fi
pins=$("$PROJECT_PYTHON" -c 'import importlib.metadata as m
for p in ("numpy", "scipy", "h5py"):
    try: print(f"{p}=={m.version(p)}")
    except m.PackageNotFoundError: print(p)' 2>/dev/null || echo "numpy scipy h5py")
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q "connectome==0.10.0" $pins
"$VENV/bin/python" -c "$CHECK"
