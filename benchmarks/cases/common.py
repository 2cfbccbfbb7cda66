"""Argument parsing and timing helpers shared by the cases."""

import argparse
import json
import statistics
import time


def args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True, choices=["connectome_dask", "connectome", "raw"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args()


def per_call(func, number, repeat=5):
    """Median seconds per call of ``func()`` over ``repeat`` batches of ``number`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def report(result):
    print(json.dumps(result))
