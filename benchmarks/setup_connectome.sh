#!/usr/bin/env bash
# Create benchmarks/.connectome-venv with connectome 0.10.0 (it cannot share an environment with
# current dask: its storage dependency pins cloudpickle<2.3). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.connectome-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import connectome" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "connectome==0.10.0" numpy scipy h5py
fi
"$VENV/bin/python" -c "import connectome, numpy; print('connectome', connectome.__version__ if hasattr(connectome, '__version__') else '0.10.0', 'numpy', numpy.__version__)"
