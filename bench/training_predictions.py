"""Prediction storage benchmark: crowdloop's one row per item (float32 blob + indexed uncertainty)
beside the obvious long format (one row per item x concept) and a JSON list per item.

Usage, from the repository root::

    .venv/bin/python bench/training_predictions.py                  # 200,000 items, SQLite
    .venv/bin/python bench/training_predictions.py --items 1000000
    DATABASE_URL=postgres://... .venv/bin/python bench/training_predictions.py   # an EMPTY db

For N pool items and C=20 concepts it times, on the same database: writing all predictions of one
model version (crowdloop: ``training.services.predictions.predictions_store``, bulk upsert;
baselines: ``executemany`` into plain tables), the bytes on disk per item, and the read that
selection does (the 1,000 most uncertain items). It prints each figure and the
baseline/crowdloop ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(tmp: Path) -> None:
    os.environ.setdefault("CROWDLOOP_VAR_DIR", str(tmp))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def table_bytes(name: str) -> int | None:
    from django.db import connection

    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SELECT pg_total_relation_size(%s)", [name])
            return int(cur.fetchone()[0])
        try:
            cur.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = %s OR name IN "
                        "(SELECT name FROM sqlite_master WHERE tbl_name = %s)", [name, name])
            return int(cur.fetchone()[0] or 0)
        except Exception:  # dbstat is not compiled into every SQLite
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--concepts", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="crowdloop-bench-pred-"))
    setup(tmp)

    import numpy as np
    from django.db import connection, transaction

    from annotate.models import Item
    from training.models import ModelVersion, Prediction
    from training.services.predictions import predictions_store, uncertainty

    n, c = args.items, args.concepts
    rng = np.random.default_rng(0)
    Item.objects.bulk_create(
        (Item(external_id=f"bench-{i}", image_file=f"items/{i}.png", image_state="ok")
         for i in range(n)), batch_size=5000)
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))[-n:]
    version = ModelVersion.objects.create(backbone="bench", concepts=[f"c{j}" for j in range(c)],
                                          checkpoint_path="-", checkpoint_sha256="0" * 64)
    probs = rng.beta(0.5, 0.5, size=(n, c)).astype(np.float32)
    results: dict[str, dict[str, float | None]] = {}

    # crowdloop: one row per item, written in chunks as the scoring tasks do.
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        with transaction.atomic():
            predictions_store(version, ids[start:start + 2000], probs[start:start + 2000])
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    top = list(Prediction.objects.filter(model_version=version).order_by("-uncertainty")
               .values_list("item_id", flat=True)[:1000])
    read = time.perf_counter() - t0
    results["crowdloop (blob row per item)"] = {
        "write_s": write, "top1000_s": read, "bytes_per_item": _per(table_bytes(
            Prediction._meta.db_table), n)}
    assert len(top) == 1000

    # baseline 1: long format, one row per item x concept.
    unc = uncertainty(probs)
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE bench_pred_long (version_id integer, item_id bigint, "
                    "concept integer, score real)")
        cur.execute("CREATE INDEX bench_pred_long_idx ON bench_pred_long (version_id, item_id)")
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        rows = [(version.pk, ids[i], j, float(probs[i, j]))
                for i in range(start, min(n, start + 2000)) for j in range(c)]
        with transaction.atomic(), connection.cursor() as cur:
            cur.executemany("INSERT INTO bench_pred_long VALUES (%s, %s, %s, %s)", rows)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("SELECT item_id, MAX(1 - ABS(2 * score - 1)) AS u FROM bench_pred_long "
                    "WHERE version_id = %s GROUP BY item_id ORDER BY u DESC LIMIT 1000",
                    [version.pk])
        cur.fetchall()
    read = time.perf_counter() - t0
    results["long format (row per item x concept)"] = {
        "write_s": write, "top1000_s": read,
        "bytes_per_item": _per(table_bytes("bench_pred_long"), n)}

    # baseline 2: a JSON list per item with the uncertainty column indexed (a fair middle way).
    import json

    with connection.cursor() as cur:
        cur.execute("CREATE TABLE bench_pred_json (version_id integer, item_id bigint, "
                    "scores text, uncertainty real)")
        cur.execute("CREATE INDEX bench_pred_json_idx ON bench_pred_json "
                    "(version_id, uncertainty DESC)")
    t0 = time.perf_counter()
    for start in range(0, n, 2000):
        rows = [(version.pk, ids[i], json.dumps([round(float(p), 6) for p in probs[i]]),
                 float(unc[i])) for i in range(start, min(n, start + 2000))]
        with transaction.atomic(), connection.cursor() as cur:
            cur.executemany("INSERT INTO bench_pred_json VALUES (%s, %s, %s, %s)", rows)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("SELECT item_id FROM bench_pred_json WHERE version_id = %s "
                    "ORDER BY uncertainty DESC LIMIT 1000", [version.pk])
        cur.fetchall()
    read = time.perf_counter() - t0
    results["JSON list per item"] = {"write_s": write, "top1000_s": read,
                                     "bytes_per_item": _per(table_bytes("bench_pred_json"), n)}

    ours = results["crowdloop (blob row per item)"]
    print(f"predictions of {n:,} items x {c} concepts on {connection.vendor}")
    print(f"{'storage':40s} {'write s':>9s} {'top-1000 s':>11s} {'bytes/item':>11s}  ratios vs "
          "crowdloop (write, read, size)")
    for name, row in results.items():
        ratios = ", ".join(
            "-" if row[k] is None or not ours[k] else f"{row[k] / ours[k]:.2f}x"
            for k in ("write_s", "top1000_s", "bytes_per_item"))
        size = "n/a" if row["bytes_per_item"] is None else f"{row['bytes_per_item']:.0f}"
        print(f"{name:40s} {row['write_s']:9.2f} {row['top1000_s']:11.4f} {size:>11s}  {ratios}")


def _per(total: int | None, n: int) -> float | None:
    return None if total is None else total / n


if __name__ == "__main__":
    main()
