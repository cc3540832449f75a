"""Run the benchmarks one after another (``make bench``), each in its own process.

    .venv/bin/python bench/run_all.py            # the quick versions: a few minutes in all
    .venv/bin/python bench/run_all.py --full     # the sizes behind the README's figures (hours)
    .venv/bin/python bench/run_all.py --only import aggregation

The PostgreSQL load benchmarks (``load_data.py`` and ``load_test.py``) need a server and a role
with CREATEDB; they run only with ``--postgres``. The GPU benchmark runs only where CUDA is. Each
script prints its own figures and ratios against its anchor; this runner prints the command before
each, its wall time after, and a summary with the exit status of each, and exits non-zero if any
failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# name -> (quick arguments, full arguments), each run as `python bench/<script> <arguments>`.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "aggregation": (
        ["aggregation.py", "accuracy"],
        ["aggregation.py", "all"],
    ),
    "import": (
        ["import_classifications.py", "--rows", "100000"],
        ["import_classifications.py"],
    ),
    "ml": (
        ["ml_train.py", "--quick"],
        ["ml_train.py"],
    ),
    "active_learning": (
        ["active_learning.py", "--quick"],
        ["active_learning.py", "--seeds", "3", "--rounds", "20", "--pool", "6000"],
    ),
    "training_predictions": (
        ["training_predictions.py", "--items", "20000"],
        ["training_predictions.py"],
    ),
}
POSTGRES = {
    "load_data": (
        ["load_data.py", "fill", "--recreate", "--items", "10000", "--classifications", "100000"],
        ["load_data.py", "fill", "--recreate"],
    ),
    "load_test": (
        ["load_test.py", "--duration", "5"],
        ["load_test.py"],
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the README's sizes (slow)")
    parser.add_argument("--postgres", action="store_true", help="also the PostgreSQL load tests")
    parser.add_argument("--only", nargs="*", default=None, help="names to run (default: all)")
    args = parser.parse_args()

    chosen = dict(BENCHMARKS)
    if args.postgres:
        chosen.update(POSTGRES)
    if args.only:
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in args.only}

    results: list[tuple[str, int, float]] = []
    for name, (quick, full) in chosen.items():
        command = [sys.executable, str(REPO / "bench" / (full if args.full else quick)[0])]
        command += (full if args.full else quick)[1:]
        print(f"\n=== {name}: $ {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command, cwd=REPO)
        results.append((name, code, time.perf_counter() - started))

    print("\nbenchmark              status   wall s")
    for name, code, seconds in results:
        print(f"{name:<22} {'ok' if code == 0 else f'rc {code}':<8} {seconds:7.1f}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
