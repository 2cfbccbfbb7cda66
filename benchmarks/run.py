"""Benchmark connectome_dask against connectome 0.10.0 and the raw floor, from one command.

    python benchmarks/run.py eager               # one case; or several; or: all
    python benchmarks/run.py all --quick         # smoke run, a couple of minutes
    python benchmarks/run.py disk --repeat 9 --libs connectome_dask raw

Design:
* Every measurement is a fresh subprocess ``<python> benchmarks/cases/<case>.py --lib <lib> --json``
  that prints one JSON object of metrics, so libraries never share a process, an import or a cache.
* connectome_dask and raw run on this interpreter (connectome_dask from the checkout: the repository
  root goes first on PYTHONPATH); connectome runs on ``benchmarks/.connectome-venv/bin/python``,
  made by ``setup_connectome.sh`` when missing (it cannot share an environment with current dask).
* Libraries alternate (A B C A B C ...) for ``--repeat`` rounds, so that the machine's noise hits
  them alike and the ratios come from one run; the table shows the median of every metric, the
  ratio of connectome_dask to the raw floor and to connectome, and connectome's to the raw floor.
  Ratios are plain quotients: for times lower is better, for MB/s and speedups higher is better.
* A library that fails to import or run is shown as "not available: <last line of its error>"; a
  case reports a metric it cannot measure (an API missing) the same way. Nothing here crashes on it.
* Slow reference measurements (``--slow`` of a case: hand-written dask.delayed at 10,000 ids) run
  in the first round only. Every run and the medians go to ``benchmarks/results/<case>.json``.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONNECTOME_PYTHON = os.path.join(HERE, ".connectome-venv", "bin", "python")
LIBS = ("connectome_dask", "connectome", "raw")
CASES = {"eager": LIBS, "ram_hit": LIBS, "disk": LIBS, "graph": ("connectome_dask", "raw"), "persist": LIBS,
         "stamps": ("connectome_dask", "raw"), "torch_loader": ("connectome_dask", "raw"),
         "first_call": ("connectome_dask",), "s3": ("connectome_dask", "raw")}
SHORT = {"connectome_dask": "cd", "connectome": "cn", "raw": "raw"}


def interpreter(lib):
    if lib != "connectome":
        return sys.executable
    if not os.path.exists(CONNECTOME_PYTHON):
        env = {**os.environ, "PROJECT_PYTHON": sys.executable}
        subprocess.run(["bash", os.path.join(HERE, "setup_connectome.sh")], env=env, check=False)
    return CONNECTOME_PYTHON


def measure(case, lib, quick, slow, timeout):
    """One subprocess run: its metrics, or {"error": ...}."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    cmd = [interpreter(lib), os.path.join(HERE, "cases", f"{case}.py"), "--lib", lib, "--json"]
    cmd += ["--quick"] * quick + ["--slow"] * slow
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]}
    return json.loads(lines[-1])


def medians(results):
    """Median of each numeric metric over the runs that gave it; other values (notes) as is."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {"error": results[0]["error"]}
    table = {}
    for key in dict.fromkeys(k for r in ok for k in r):
        values = [r[key] for r in ok if key in r]
        numbers = [v for v in values if isinstance(v, (int, float))]
        table[key] = statistics.median(numbers) if numbers else values[0]
    return table


def run(case, libs, repeat, quick, timeout):
    runs = {lib: [] for lib in libs}
    for round_ in range(repeat):
        for lib in libs:
            runs[lib].append(measure(case, lib, quick, slow=round_ == 0 and not quick, timeout=timeout))
            print(".", end="", flush=True)
    return {lib: medians(results) for lib, results in runs.items()}, runs


def ratio(table, lib, ref, key):
    a, b = table.get(lib, {}).get(key), table.get(ref, {}).get(key)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return f"{a / b:.3g}x" if ok and b else ""


def show(case, table, repeat):
    print(f"\n== {case}: median of {repeat} alternating run(s) ==")
    libs = [lib for lib in table if "error" not in table[lib]]
    pairs = [(lib, ref) for lib, ref in (("connectome_dask", "raw"), ("connectome_dask", "connectome"),
                                         ("connectome", "raw")) if lib in libs and ref in libs]
    keys = list(dict.fromkeys(k for lib in libs for k in table[lib]))
    header = ["metric"] + libs + [f"{SHORT[lib]}/{SHORT[ref]}" for lib, ref in pairs]
    rows, notes = [header], []
    for key in keys:
        cells = [key]
        for lib in libs:
            value = table[lib].get(key, "")
            if isinstance(value, str) and value:
                notes.append(f"  {lib} {key}: {value}")
                value = "n/a"
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        rows.append(cells + [ratio(table, lib, ref, key) for lib, ref in pairs])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    for lib, row in table.items():
        if "error" in row:
            print(f"  {lib}: not available: {row['error']}")
    print("\n".join(notes))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", choices=[*CASES, "all"], metavar="case",
                        help=f"one or more of: {', '.join(CASES)}; or all")
    parser.add_argument("--repeat", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats inside each case")
    parser.add_argument("--libs", nargs="+", choices=LIBS, default=LIBS, help="a subset of the libraries")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    args = parser.parse_args()
    cases = list(CASES) if "all" in args.cases else args.cases
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    for case in cases:
        libs = [lib for lib in CASES[case] if lib in args.libs]
        load = os.getloadavg()
        print(f"{case}: {', '.join(libs)} x {args.repeat} ", end="", flush=True)
        table, runs = run(case, libs, args.repeat, args.quick, args.timeout)
        show(case, table, args.repeat)
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpus": os.cpu_count(), "python": sys.executable, "repeat": args.repeat, "quick": args.quick,
                "loadavg_before": load, "loadavg_after": os.getloadavg()}
        with open(os.path.join(HERE, "results", f"{case}.json"), "w") as f:
            json.dump({"meta": meta, "medians": table, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
