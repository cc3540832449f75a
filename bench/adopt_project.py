"""Adopting a project: subjects + classifications + aggregation, beside panoptes_aggregation.

Usage, from the repository root::

    .venv/bin/python bench/adopt_project.py                      # 1,000,000 rows, 100,000 subjects
    .venv/bin/python bench/adopt_project.py --rows 200000 --subjects 20000
    .venv/bin/python bench/adopt_project.py --reduce-fraction 1  # reduce the whole extract

A project that already runs on Zooniverse, whose subjects carry no external id in their metadata,
brings its two exports over. The script writes, into a temporary folder (``--workdir`` keeps it):

* a subject export in Zooniverse's format (``subject_id, project_id, workflow_id,
  subject_set_id, metadata, locations, classifications_count, retired_at, retirement_reason,
  created_at, updated_at``), one row per subject, metadata without any ``external_id`` /
  ``europeana_id`` / ``crowdloop_id`` key, so subjects can find their items only by subject id;
* a classification export of ``--rows`` rows on those subjects, from
  ``bench/import_classifications.py``'s generator, its ``subject_data`` without those keys too;
* the workflow export (the same generator's).

Then, on a scratch SQLite database (a temporary ``CROWDLOOP_VAR_DIR``), after an untimed
``migrate`` and ``load_vocabulary``, it times each command as a user runs it, each in its own
process: ``configure_workflow --workflow-id 7 --workflow-export wf.csv --match-key subject_id``,
``import_subjects subjects.csv --workflow-id 7 --no-fetch``, ``import_classifications cls.csv
--workflow-id 7``, ``aggregate``; and counts the labels that came out.

Beside it, panoptes_aggregation 5.3.1 (``bench/.venv-panoptes-aggregation``, made on first use):
``extract`` of the same classification export on one CPU (``-c 1``), as
``bench/import_classifications.py`` runs it, then ``reduce`` of the extract with the reducer
config its ``config`` wrote. With ``--reduce-fraction`` below 1 (default 0.1) reduce runs on
the extract rows of the first fraction of subjects (by subject id) and its time is scaled up
linearly by rows: printed as EXTRAPOLATED; its memory is the measured one, on that fraction.

Seconds are wall-clock from the parent; peak memory is the larger of the child's ``ru_maxrss``
and the summed PSS of its process tree, sampled every 50 ms (``import_classifications.measure``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_classifications import (  # noqa: E402
    PYTHON,
    WORKFLOW_ID,
    Measured,
    classification_export_write,
    measure,
    panoptes_side,
    panoptes_venv,
    run,
    subject_id_of,
    workflow_export_write,
)

SUBJECT_COLUMNS = [
    "subject_id", "project_id", "workflow_id", "subject_set_id", "metadata", "locations",
    "classifications_count", "retired_at", "retirement_reason", "created_at", "updated_at",
]  # fmt: skip
PROJECT_ID = 4_321
SET_SIZE = 2_000  # as the classification generator works through its subject sets


def subject_export_write(path: Path, *, subjects: int, seed: int = 11) -> None:
    """One row per subject, linked to the workflow, about 10% retired; metadata without any key
    that names an item (``URI``, ``Filename``, a hidden ``#priority`` and ``!batch``)."""
    rng = random.Random(seed)
    uploaded = datetime(2024, 1, 20, 9, 0, tzinfo=UTC)

    def stamp(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBJECT_COLUMNS)
        for index in range(subjects):
            subject_set = 118_000 + index // SET_SIZE
            created = uploaded + timedelta(seconds=index // 50)
            metadata = {
                "URI": f"http://data.europeana.eu/item/2058612/item_{index:07d}",
                "Filename": f"item_{index:07d}.jpg",
                "#priority": round(rng.random(), 4),
                "!batch": f"upload-{index // SET_SIZE:03d}",
            }
            locations = {
                "0": f"https://panoptes-uploads.zooniverse.org/subject_location/"
                f"{rng.getrandbits(128):032x}.jpeg"
            }
            retired = rng.random() < 0.1
            finished = created + timedelta(days=rng.randint(1, 30))
            writer.writerow(
                [
                    subject_id_of(index), PROJECT_ID, WORKFLOW_ID, subject_set,
                    json.dumps(metadata, separators=(",", ":")),
                    json.dumps(locations, separators=(",", ":")),
                    10 if retired else rng.randint(3, 9),
                    stamp(finished) if retired else "",
                    "classification_count" if retired else "",
                    stamp(created), stamp(finished),
                ]
            )  # fmt: skip


# --------------------------------------------------------------------------------------------
# crowdloop
# --------------------------------------------------------------------------------------------


def last_line(measured: Measured) -> str:
    lines = [line for line in measured.stdout.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def crowdloop_side(
    workdir: Path, subjects_csv: Path, cls: Path, wf: Path
) -> tuple[list[tuple[str, Measured]], dict[str, int]]:
    var = workdir / "var"
    shutil.rmtree(var, ignore_errors=True)  # a fresh database every run
    var.mkdir(parents=True)
    env = dict(os.environ, CROWDLOOP_VAR_DIR=str(var))
    env.pop("DATABASE_URL", None)  # SQLite under the scratch var dir
    manage = [str(PYTHON), "manage.py"]
    run([*manage, "migrate", "-v", "0"], env=env)
    run([*manage, "load_vocabulary"], env=env)
    workflow = str(WORKFLOW_ID)
    steps = [
        ("configure_workflow", [
            "configure_workflow", "--workflow-id", workflow, "--workflow-export", str(wf),
            "--match-key", "subject_id",
        ]),
        ("import_subjects", [
            "import_subjects", str(subjects_csv), "--workflow-id", workflow, "--no-fetch",
        ]),
        ("import_classifications", [
            "import_classifications", str(cls), "--workflow-id", workflow,
        ]),
        ("aggregate", ["aggregate"]),
    ]  # fmt: skip
    results = []
    for name, arguments in steps:
        print(f"  $ manage.py {' '.join(arguments)}", flush=True)
        measured = measure([*manage, *arguments], env=env)
        for line in measured.stdout.splitlines():
            line = line.split("\r")[-1].rstrip()  # the last state of a progress bar
            if line and "%|" not in line:
                print(f"      {line}")
        print(f"      {measured.seconds:.1f} s, peak {measured.peak_rss_mib:,.0f} MiB", flush=True)
        results.append((name, measured))
    db = sqlite3.connect(var / "crowdloop.sqlite3")
    counts = {
        query: db.execute(sql).fetchone()[0]
        for query, sql in {
            "items": "SELECT COUNT(*) FROM annotate_item",
            "subjects linked to an item": "SELECT COUNT(*) FROM annotate_subject "
            "WHERE item_id IS NOT NULL",
            "classifications": "SELECT COUNT(*) FROM annotate_classification",
            "classifications on an item": "SELECT COUNT(*) FROM annotate_classification "
            "WHERE item_id IS NOT NULL",
            "AggregatedLabel rows": "SELECT COUNT(*) FROM annotate_aggregatedlabel",
            "items with labels": "SELECT COUNT(DISTINCT item_id) FROM annotate_aggregatedlabel",
            "labels with posterior >= 0.5": "SELECT COUNT(*) FROM annotate_aggregatedlabel "
            "WHERE posterior >= 0.5",
        }.items()
    }
    db.close()
    return results, counts


# --------------------------------------------------------------------------------------------
# panoptes_aggregation
# --------------------------------------------------------------------------------------------


def extract_fraction(extract: Path, target: Path, fraction: float) -> tuple[int, int, int, int]:
    """The extract's rows of the first ``fraction`` of its subjects (by subject id) into
    ``target``; (rows kept, rows in all, subjects kept, subjects in all)."""
    with extract.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        column = header.index("subject_id")
        rows = list(reader)
    ids = sorted({int(row[column]) for row in rows})
    keep_count = max(1, round(len(ids) * fraction))
    keep = set(ids[:keep_count])
    kept = [row for row in rows if int(row[column]) in keep]
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    return len(kept), len(rows), keep_count, len(ids)


def panoptes_reduce(workdir: Path, fraction: float) -> tuple[Measured, float, str]:
    """``reduce`` of the extract; (measured, full-data seconds, how that figure was got)."""
    cli = panoptes_venv()
    out = workdir / "panoptes"
    extracts = sorted(out.glob("question_extractor_*.csv"))
    reducers = sorted(out.glob("Reducer_config_*question_extractor*.yaml"))
    if not extracts or not reducers:
        found = ", ".join(p.name for p in sorted(out.iterdir()))
        raise SystemExit(f"no question extract or reducer config in {out}: {found}")
    extract = extracts[0]
    how = "measured on the whole extract"
    if fraction < 1:
        part = out / f"extract_first_{fraction:g}_of_subjects.csv"
        kept, total, subjects_kept, subjects_total = extract_fraction(extract, part, fraction)
        extract = part
        how = (
            f"EXTRAPOLATED: measured on {kept:,} of {total:,} extract rows (the first "
            f"{subjects_kept:,} of {subjects_total:,} subjects), seconds beyond start-up "
            f"scaled by rows; peak memory as measured on that part"
        )
    command = [
        str(cli), "reduce", str(extract), str(reducers[0]), "-d", str(out), "-o", "bench",
        "-c", "1",
    ]  # fmt: skip
    print("  $ panoptes_aggregation " + " ".join(command[1:]), flush=True)
    measured = measure(command, cwd=workdir)
    if fraction >= 1:
        return measured, measured.seconds, how
    # What reduce costs whatever the size (start-up, imports): reduce of one subject's rows.
    one = out / "extract_one_subject.csv"
    extract_fraction(extracts[0], one, 1e-9)
    fixed = measure([*command[:2], str(one), *command[3:]], cwd=workdir).seconds
    seconds = fixed + max(0.0, measured.seconds - fixed) * total / kept
    how += (
        f"; start-up (reduce of one subject) {fixed:.1f} s counted once: "
        f"{fixed:.1f} + ({measured.seconds:.1f} - {fixed:.1f}) x {total / kept:.2f}"
    )
    return measured, seconds, how


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (reused)")
    parser.add_argument("--skip-panoptes", action="store_true")
    parser.add_argument(
        "--reduce-fraction", type=float, default=0.1,
        help="reduce only this share of the subjects and extrapolate (1: the whole extract)",
    )  # fmt: skip
    args = parser.parse_args()
    if not 0 < args.reduce_fraction <= 1:
        parser.error("--reduce-fraction must be in (0, 1]")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crowdloop-bench-adopt-"))
    workdir.mkdir(parents=True, exist_ok=True)
    subjects_csv = workdir / "subjects.csv"
    cls, wf = workdir / "classifications.csv", workdir / "workflows.csv"
    try:
        start = time.perf_counter()
        marker = workdir / f"rows-{args.rows}-subjects-{args.subjects}"
        if marker.exists() and all(p.exists() for p in (subjects_csv, cls, wf)):
            print(f"reusing the exports in {workdir}")
        else:
            for stale in workdir.glob("rows-*"):
                stale.unlink()
            workflow_export_write(wf)
            subject_export_write(subjects_csv, subjects=args.subjects)
            classification_export_write(
                cls, rows=args.rows, subjects=args.subjects, external_keys=False
            )
            marker.touch()
        print(
            f"{args.subjects:,} subjects ({subjects_csv.stat().st_size / 2**20:,.0f} MiB), "
            f"{args.rows:,} classifications ({cls.stat().st_size / 2**20:,.0f} MiB), "
            f"ready in {time.perf_counter() - start:.0f} s under {workdir}"
        )
        print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}, {os.cpu_count()} CPUs")

        print("crowdloop, scratch SQLite database:")
        ours, counts = crowdloop_side(workdir, subjects_csv, cls, wf)
        print("  after aggregate: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

        theirs: list[tuple[str, float, float, str]] = []
        if not args.skip_panoptes:
            print("panoptes_aggregation 5.3.1:")
            extract = panoptes_side(workdir, cls, wf)
            print(f"      {extract.seconds:.1f} s, peak {extract.peak_rss_mib:,.0f} MiB")
            theirs.append(("extract -c 1", extract.seconds, extract.peak_rss_mib, "measured"))
            reduce, reduce_seconds, how = panoptes_reduce(workdir, args.reduce_fraction)
            print(f"      {reduce.seconds:.1f} s, peak {reduce.peak_rss_mib:,.0f} MiB; {how}")
            label = "reduce -c 1" + (" (EXTRAPOLATED)" if args.reduce_fraction < 1 else "")
            theirs.append((label, reduce_seconds, reduce.peak_rss_mib, how))

        print(f"\n{'':48} {'seconds':>9} {'peak MiB':>9}")
        timed = [(f"crowdloop {name}", m.seconds, m.peak_rss_mib) for name, m in ours]
        for name, seconds, peak in timed:
            print(f"{name:48} {seconds:9.1f} {peak:9,.0f}")
        three = [row for row in timed if not row[0].endswith("configure_workflow")]
        ours_total = sum(seconds for _, seconds, _ in three)
        ours_peak = max(peak for _, _, peak in three)
        print(
            f"{'crowdloop total (subjects+cls+aggregate)':48} {ours_total:9.1f} {ours_peak:9,.0f}"
        )
        if theirs:
            for name, seconds, peak, _ in theirs:
                print(f"{'panoptes_aggregation ' + name:48} {seconds:9.1f} {peak:9,.0f}")
            their_total = sum(seconds for _, seconds, _, _ in theirs)
            their_peak = max(peak for _, _, peak, _ in theirs)
            label = "panoptes_aggregation extract + reduce"
            print(f"{label:48} {their_total:9.1f} {their_peak:9,.0f}")
            extrapolated = " (reduce EXTRAPOLATED)" if args.reduce_fraction < 1 else ""
            print(
                f"\nratio: crowdloop is {their_total / ours_total:.1f}x faster than extract + "
                f"reduce{extrapolated}; peak memory {ours_peak / their_peak:.2f} of theirs"
            )
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}, {os.cpu_count()} CPUs")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
