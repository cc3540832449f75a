"""The aggregation, import and load figures of this tree beside an anchor revision's.

Usage, from the repository root (the load part after ``bench/load_data.py fill``)::

    .venv/bin/python bench/against_anchor.py --anchor 8ad8f64 --runs 3
    .venv/bin/python bench/against_anchor.py --anchor 8ad8f64 --parts aggregation import

For a change that should move code without changing what it does: each part runs in the
anchor's tree (a temporary git worktree sharing this ``.venv``) and in this one, alternating,
``--runs`` times each, so both sides see the same machine load; it prints each side's median and
range and the ratio this / anchor, and fails when the two sides' results (not their timings)
differ.

- aggregation: the crowd of ``bench/aggregation.py speed`` (1,000,000 classifications x 20
  concepts) through ``ml.aggregation``'s two-coin Dawid-Skene, wall and CPU seconds; the labels
  must be identical, and so must majority vote and categorical Dawid-Skene accuracies on the four
  reference datasets when they are there (``CROWDLOOP_CROWD_REFERENCE``).
- import: ``bench/import_classifications.py --skip-panoptes`` on one shared export of ``--rows``
  rows into a fresh SQLite file, first import and re-import, wall and CPU seconds.
- load: ``bench/load_test.py`` on the PostgreSQL benchmark database, p95 per route.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from anchor import REPO, anchor_tree, compare_header, compare_row

PARTS = ("aggregation", "import", "load")
ROUTES = ("review_queue", "review_item", "admin_items", "api_items", "api_labels")
LOAD_ROW = re.compile(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s")
IMPORT_ROW = re.compile(r"^crowdloop (import|re-import) \(SQLite\)\s+([\d.]+)\s+[\d,]+\s+([\d.]+)")

AGGREGATION = """
import hashlib, json, os, resource, time
from pathlib import Path
import numpy as np
from bench.aggregation import DATASETS, REFERENCE, load_zheng, micro_f1_exact, simulate_crowd
from ml.aggregation import VoteMatrix, dawid_skene_binary
try:
    from bench.aggregation_categorical import (
        CategoricalVotes, dawid_skene_categorical, majority_vote_categorical)
except ImportError:  # before the categorical models moved to bench/
    from ml.aggregation import CategoricalVotes, dawid_skene_categorical, majority_vote_categorical
data = simulate_crowd(n_items=200_000, n_concepts=20, votes_per_item=5, n_workers=5_000, seed=1)
start, cpu = time.perf_counter(), time.process_time()
votes = VoteMatrix.from_arrays(data["item"], data["worker"], data["labels"],
                               n_items=data["n_items"], n_workers=data["n_workers"])
result = dawid_skene_binary(votes)
out = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
       "labels": hashlib.sha256(np.ascontiguousarray(result.labels)).hexdigest()[:16],
       "micro_f1": round(micro_f1_exact(result.labels, data["truth"])[0], 6)}
if Path(REFERENCE).is_dir():
    for name, folder in DATASETS.items():
        d = load_zheng(folder)
        cv = CategoricalVotes.from_arrays(d["item"], d["worker"], d["label"], n_items=d["n_items"])
        mask = d["truth"] >= 0
        for model, fit in (("MV", majority_vote_categorical), ("DS", dawid_skene_categorical)):
            right = fit(cv).labels[mask] == d["truth"][mask]
            out[f"{name} {model}"] = round(float(right.mean()), 6)
print("RESULT " + json.dumps(out))
"""


def run_aggregation(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, "-c", AGGREGATION], cwd=tree, env=env, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"aggregation failed in {tree}:\n{result.stdout}\n{result.stderr}")


def run_import(tree: Path, workdir: Path, rows: int) -> dict:
    command = [
        sys.executable, "bench/import_classifications.py", "--rows", str(rows),
        "--workdir", str(workdir), "--skip-panoptes",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    found = {}
    for line in result.stdout.splitlines():
        if match := IMPORT_ROW.match(line):
            found[f"{match.group(1)} wall s"] = float(match.group(2))
            found[f"{match.group(1)} CPU s"] = float(match.group(3))
    if result.returncode or len(found) != 4:
        raise SystemExit(f"import failed in {tree}:\n{result.stdout}\n{result.stderr}")
    return found


def run_load(tree: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, "bench/load_test.py", "--database", args.database,
        "--duration", str(args.duration), "--routes", *ROUTES,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=1800)
    p95 = {}
    for line in result.stdout.splitlines():
        if (match := LOAD_ROW.match(line)) and match.group(1) in ROUTES:
            p95[f"{match.group(1)} p95 ms"] = float(match.group(5))
    clean = "tracebacks in the gunicorn log: 0" in result.stdout
    if result.returncode or len(p95) != len(ROUTES) or not clean:
        raise SystemExit(f"load_test failed in {tree}:\n{result.stdout}\n{result.stderr}")
    return p95


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchor", required=True, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rows", type=int, default=200_000, help="import: export rows")
    parser.add_argument("--database", default="crowdloop_bench", help="load: the bench database")
    parser.add_argument("--duration", type=int, default=15, help="load: seconds per route")
    args = parser.parse_args(argv)
    # The anchor's tree lies in a temporary folder, away from the reference data beside this one.
    os.environ.setdefault(
        "CROWDLOOP_CROWD_REFERENCE", str(REPO.parent / "shared" / "reference" / "crowd")
    )

    # side -> part -> figure -> values; results that must agree are checked as they come.
    timings: dict[str, dict[str, dict[str, list[float]]]] = {
        "anchor": defaultdict(lambda: defaultdict(list)),
        "this": defaultdict(lambda: defaultdict(list)),
    }
    agreed: dict[str, object] = {}
    with anchor_tree(args.anchor) as anchor, tempfile.TemporaryDirectory() as workdir:
        print(f"anchor {args.anchor} in {anchor}; load average {os.getloadavg()}", flush=True)
        for n in range(args.runs):
            for side, tree in (("anchor", anchor), ("this", REPO)):
                measured: dict[str, dict] = {}
                if "aggregation" in args.parts:
                    result = run_aggregation(tree)
                    for key in [k for k in result if k not in ("seconds", "cpu_seconds")]:
                        if agreed.setdefault(key, result[key]) != result[key]:
                            raise SystemExit(f"{key}: {side} gives {result[key]}, "
                                             f"the other side {agreed[key]}")  # fmt: skip
                    measured["aggregation"] = {
                        "DS 1M x 20 wall s": result["seconds"],
                        "DS 1M x 20 CPU s": result["cpu_seconds"],
                    }
                if "import" in args.parts:
                    measured["import"] = run_import(tree, Path(workdir), args.rows)
                if "load" in args.parts:
                    measured["load"] = run_load(tree, args)
                for part, figures in measured.items():
                    for figure, value in figures.items():
                        timings[side][part][figure].append(value)
                shown = "  ".join(
                    f"{figure} {value:.1f}"
                    for figures in measured.values()
                    for figure, value in figures.items()
                )
                print(f"run {n + 1} {side:6} {shown}", flush=True)

    print(f"\nresults the same on both sides: {json.dumps(agreed, indent=None)}")
    print(f"load average at the end: {os.getloadavg()}\n")
    print(compare_header(args.anchor, args.runs))
    for part in args.parts:
        for figure, values in timings["this"][part].items():
            unit = "ms" if figure.endswith("ms") else "s"
            name = f"{part}: {figure.removesuffix(' ms').removesuffix(' s')}"
            print(compare_row(name, timings["anchor"][part][figure], values, unit))


if __name__ == "__main__":
    main()
