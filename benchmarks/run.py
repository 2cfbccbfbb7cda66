"""Run benchmark cases for connectome_dask, connectome 0.10.0 and the raw floor from one command.

    python benchmarks/run.py eager ram_hit disk graph persist   # or: all
    python benchmarks/run.py all --quick --repeat 3

Each measurement is a fresh subprocess ``<python> benchmarks/cases/<case>.py --lib <lib> --json``;
libraries alternate (A B C A B C ...) so that the machine's noise hits them alike, and the table
reports the median of every metric and its ratios to the raw floor and to connectome. connectome
runs in ``benchmarks/.connectome-venv`` (``setup_connectome.sh`` makes it): it cannot share an
environment with current dask. Results are also written to ``benchmarks/results/<case>.json``.
A library that fails is reported as "not available" with its error.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = {"eager": ("connectome_dask", "connectome", "raw"), "ram_hit": ("connectome_dask", "connectome", "raw"),
         "disk": ("connectome_dask", "connectome", "raw"), "graph": ("connectome_dask", "raw"),
         "persist": ("connectome_dask", "connectome", "raw")}


def interpreter(lib):
    if lib != "connectome":
        return sys.executable
    python = os.path.join(HERE, ".connectome-venv", "bin", "python")
    if not os.path.exists(python):
        subprocess.run(["bash", os.path.join(HERE, "setup_connectome.sh")], check=True)
    return python


def measure(case, lib, quick):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
    cmd = [interpreter(lib), os.path.join(HERE, "cases", f"{case}.py"), "--lib", lib, "--json"]
    out = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(case, repeat, quick):
    libs = CASES[case]
    runs = {lib: [] for lib in libs}
    for _ in range(repeat):
        for lib in libs:
            runs[lib].append(measure(case, lib, quick))
    table = {}
    for lib, results in runs.items():
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            table[lib] = {"error": errors[0]}
            continue
        table[lib] = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return table


def show(case, table):
    print(f"\n== {case} (medians) ==")
    metrics = sorted({k for row in table.values() for k in row if k != "error"})
    for lib, row in table.items():
        if "error" in row:
            print(f"  {lib:16s} not available: {row['error']}")
            continue
        cells = []
        for k in metrics:
            if k not in row:
                continue
            cell = f"{k}={row[k]:.4g}"
            for ref in ("raw", "connectome"):
                other = table.get(ref, {})
                if ref != lib and k in other and other[k]:
                    cell += f" ({row[k] / other[k]:.2f}x {ref})"
            cells.append(cell)
        print(f"  {lib:16s} " + "; ".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", help=f"cases: {', '.join(CASES)} or all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    cases = list(CASES) if args.cases == ["all"] else args.cases
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    for case in cases:
        table = run(case, args.repeat, args.quick)
        show(case, table)
        with open(os.path.join(HERE, "results", f"{case}.json"), "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
