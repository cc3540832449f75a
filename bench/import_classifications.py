"""Import benchmark: crowdloop's ``import_classifications`` beside panoptes_aggregation ``extract``.

Usage, from the repository root::

    .venv/bin/python bench/import_classifications.py                 # 1,000,000 rows
    .venv/bin/python bench/import_classifications.py --rows 100000   # a quicker run
    DATABASE_URL=postgres://... .venv/bin/python bench/import_classifications.py  # an EMPTY db
    .venv/bin/python bench/import_classifications.py --insert-variants  # + ways to insert

It writes a synthetic multiple-answer classification export (the shape of ``zooniverse.md``
§5.1: 18 answers, about 10 votes per subject, logged-in and logged-out volunteers, realistic
``metadata`` and ``subject_data`` JSON) and the matching workflow export into a temporary folder,
then times, each in its own process:

1. crowdloop: ``manage.py import_classifications`` into a fresh SQLite file (or the database in
   ``DATABASE_URL``), after an untimed ``migrate``, ``load_vocabulary`` and ``configure_workflow``;
   then the same import again (a re-import must be a no-op and no slower);
2. panoptes_aggregation 5.3.1: ``panoptes_aggregation extract`` of the same file with the
   extractor config its own ``panoptes_aggregation config`` made from the workflow export, on one
   CPU (``-c 1``) like crowdloop. It lives in ``bench/.venv-panoptes-aggregation`` (git-ignored),
   created and installed from PyPI on first use, never in the project's environment.

Wall time comes from the parent's clock; peak memory is the larger of the child's ``ru_maxrss``
(from ``os.wait4``) and the summed proportional set size of its whole process tree, sampled
every 50 ms: crowdloop parses a big export in a forked helper, and both resident sets count.
The two tools do not do the same work: extract only turns each row into a per-task answer vector
in a CSV, while the import also resolves subjects, volunteers, repeats and counters and commits
everything to a database. The comparison is the one a project choosing between them would make.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
PA_VENV = REPO / "bench" / ".venv-panoptes-aggregation"
PA_PACKAGES = ["panoptes-aggregation==5.3.1"]
WORKFLOW_ID = 7
VERSION = (3, 1)

# 17 labels of the Europeana pilot vocabulary (they map to concepts) and one that maps to none.
ANSWERS = [
    "building", "ceramics", "drawing", "furniture", "jewellery", "map", "painting",
    "photograph", "postcard", "sculpture", "tapestry", "textile", "toy", "woodwork",
    "archaeological_site", "inscription", "weaponry", "something else",
]  # fmt: skip
CLASSIFICATION_COLUMNS = [
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
]  # fmt: skip
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:122.0) Gecko/20100101 Firefox/122.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
]


# --------------------------------------------------------------------------------------------
# synthetic exports
# --------------------------------------------------------------------------------------------


def workflow_export_write(path: Path) -> None:
    """The workflow export panoptes_aggregation's ``config`` and our ``configure_workflow`` read."""
    tasks = {
        "T0": {
            "help": "T0.help",
            "type": "multiple",
            "answers": [{"label": f"T0.answers.{i}.label"} for i in range(len(ANSWERS))],
            "question": "T0.question",
            "required": False,
        }
    }
    strings = {"T0.question": "Which of these labels apply?", "T0.help": "Tick every one."}
    strings.update({f"T0.answers.{i}.label": label for i, label in enumerate(ANSWERS)})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "workflow_id", "display_name", "version", "active", "classifications_count",
                "pairwise", "grouped", "prioritized", "primary_language", "first_task",
                "tutorial_subject_id", "retired_set_member_subjects_count", "tasks",
                "retirement", "aggregation", "strings", "minor_version",
            ]
        )  # fmt: skip
        writer.writerow(
            [
                WORKFLOW_ID, "Which labels apply?", VERSION[0], "true", 0, "false", "false",
                "false", "en", "T0", "", 0, json.dumps(tasks),
                json.dumps({"criteria": "classification_count", "options": {"count": 10}}),
                "{}", json.dumps(strings), VERSION[1],
            ]
        )  # fmt: skip


def subject_id_of(index: int) -> int:
    """The Zooniverse subject id of the generator's ``index``-th subject."""
    return 90_000_000 + index


def classification_export_write(
    path: Path,
    *,
    rows: int,
    seed: int = 7,
    subjects: int | None = None,
    external_keys: bool = True,
) -> None:
    """``rows`` classifications, about 10 per subject, in id (and time) order.

    ``subjects`` (default ``rows // 10``) sets how many subjects share the rows. Without
    ``external_keys`` the ``subject_data`` has no ``europeana_id``, ``external_id`` or
    ``crowdloop_id`` key, so only the subject id can find an item (as for subjects uploaded
    without one); the random draws are the same either way.

    Subjects are uploaded in sets of 2,000 and each set is classified before the next, the way a
    live project works through its subject sets; volunteers follow a heavy-tailed activity
    distribution; about a third of the votes are logged out; 0.5% repeat an earlier vote of the
    same volunteer on the same subject.
    """
    rng = random.Random(seed)
    n_subjects = subjects if subjects is not None else max(1, rows // 10)
    n_users = max(10, rows // 125)  # 8,000 logged-in volunteers for 1M rows
    n_anon = max(10, rows // 50)  # 20,000 logged-out ip hashes
    user_weights = [1.0 / (rank + 1) ** 1.1 for rank in range(n_users)]
    start = datetime(2024, 2, 1, tzinfo=UTC)
    seconds_per_row = 30 * 86400 / rows  # a month of classifications
    set_size = 2000
    order: list[int] = []
    cid = 500_000_000
    answer_weights = [6, 3, 5, 3, 2, 2, 8, 9, 4, 3, 1, 3, 1, 2, 2, 2, 1, 1]
    recent: list[tuple[str, str, str, int]] = []
    seen: set[tuple[int, int]] = set()

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CLASSIFICATION_COLUMNS)
        written = 0
        next_set = 0
        while written < rows:
            if not order:
                first = next_set * set_size
                block = range(first, min(first + set_size, n_subjects))
                if not block:
                    next_set, block = 0, range(0, min(set_size, n_subjects))
                order = [s for s in block for _ in range(10)]
                rng.shuffle(order)
                next_set += 1
            subject_index = order.pop()
            subject_id = subject_id_of(subject_index)
            if recent and rng.random() < 0.005:
                user_name, user_id, session, subject_id = rng.choice(recent)  # a repeat
            elif rng.random() < 0.33:
                ip = f"{rng.randrange(n_anon):020x}"
                user_name, user_id = f"not-logged-in-{ip}", ""
                session = f"{rng.getrandbits(256):064x}"
            else:
                # Zooniverse does not show a logged-in volunteer a subject they have seen:
                # draw again on a clash, so repeats come only from the 0.5% above.
                for _ in range(20):
                    uid = rng.choices(range(n_users), weights=user_weights)[0]
                    if (uid, subject_id) not in seen:
                        break
                seen.add((uid, subject_id))
                user_name, user_id = f"volunteer_{uid}", str(1_000_000 + uid)
                session = f"{(uid * 7919 + written // 5000):064x}"
            recent.append((user_name, user_id, session, subject_id))
            if len(recent) > 1000:
                recent = recent[-500:]
            created = start + timedelta(seconds=written * seconds_per_row)
            started = created - timedelta(seconds=rng.randint(4, 90))
            ticked = sorted(
                set(rng.choices(range(len(ANSWERS)), weights=answer_weights, k=rng.randint(0, 3)))
            )
            metadata = {
                "source": "api",
                "session": session,
                "viewport": {"width": 1710, "height": 948},
                "started_at": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "user_agent": USER_AGENTS[written % len(USER_AGENTS)],
                "utc_offset": "-3600",
                "finished_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "live_project": True,
                "interventions": {"opt_in": False, "messageShown": False},
                "user_language": "en",
                "subject_dimensions": [
                    {
                        "clientWidth": 558,
                        "clientHeight": 419,
                        "naturalWidth": 1200,
                        "naturalHeight": 900,
                    }
                ],  # fmt: skip
                "subject_selection_state": {
                    "retired": False,
                    "selected_at": started.isoformat(timespec="milliseconds"),
                    "already_seen": False,
                    "selection_state": "normal",
                    "finished_workflow": False,
                    "user_has_finished_workflow": False,
                },
                "workflow_translation_id": "28176",
            }
            record_id = f"/2058612/item_{subject_index:07d}"
            subject = {
                "retired": None,
                "europeana_id": record_id,
                "external_id": record_id,
                "crowdloop_id": str(subject_index + 1),
                "URI": f"http://data.europeana.eu/item{record_id}",
                "#priority": round(rng.random(), 4),
            }
            if not external_keys:
                for key in ("europeana_id", "external_id", "crowdloop_id"):
                    del subject[key]
            if rng.random() < 0.1:
                subject["retired"] = {
                    "id": 125_000_000 + subject_index,
                    "workflow_id": WORKFLOW_ID,
                    "classifications_count": 10,
                    "created_at": started.isoformat(),
                    "updated_at": created.isoformat(),
                    "retired_at": created.isoformat(),
                    "subject_id": subject_id,
                    "retirement_reason": "classification_count",
                }
            annotations = [
                {
                    "task": "T0",
                    "task_label": "Which of these labels apply?",
                    "value": [ANSWERS[i] for i in ticked],
                }
            ]
            writer.writerow(
                [
                    cid, user_name, user_id, f"{rng.getrandbits(80):020x}", WORKFLOW_ID,
                    "Which labels apply?", f"{VERSION[0]}.{VERSION[1]}",
                    created.strftime("%Y-%m-%d %H:%M:%S UTC"), "", "",
                    json.dumps(metadata, separators=(",", ":")),
                    json.dumps(annotations, separators=(",", ":")),
                    json.dumps({str(subject_id): subject}, separators=(",", ":")),
                    subject_id,
                ]
            )  # fmt: skip
            cid += rng.randint(1, 40)
            written += 1


# --------------------------------------------------------------------------------------------
# measuring a child process
# --------------------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    stdout: str


def _tree_pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants, in KiB (0 once it is gone).

    A process that forks a helper (crowdloop parses a big export in a child) has two resident
    sets at once; ``ru_maxrss`` reports only the larger, summing RSS counts shared pages twice,
    PSS shares them out fairly."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO) -> Measured:
    """Run ``cmd`` to completion; wall seconds and the peak memory of it and its descendants:
    the larger of its ``ru_maxrss`` and the summed PSS of its process tree, sampled every 50 ms."""
    out = tempfile.TemporaryFile()
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    peak_tree_kib = 0
    finished = threading.Event()

    def sample() -> None:
        nonlocal peak_tree_kib
        while not finished.wait(0.05):
            peak_tree_kib = max(peak_tree_kib, _tree_pss_kib(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    finished.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({process.returncode}):\n{text[-3000:]}")
    peak_mib = max(usage.ru_maxrss, peak_tree_kib) / 1024
    return Measured(seconds, usage.ru_utime + usage.ru_stime, peak_mib, text)


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def panoptes_venv() -> Path:
    """bench/.venv-panoptes-aggregation with panoptes-aggregation installed; made on first use."""
    cli = PA_VENV / "bin" / "panoptes_aggregation"
    if not cli.exists():
        print(f"creating {PA_VENV.relative_to(REPO)} and installing {' '.join(PA_PACKAGES)} ...")
        run([sys.executable, "-m", "venv", str(PA_VENV)])
        run([str(PA_VENV / "bin" / "pip"), "install", "-q", *PA_PACKAGES])
    return cli


# --------------------------------------------------------------------------------------------
# the two sides
# --------------------------------------------------------------------------------------------


def crowdloop_side(
    workdir: Path, cls: Path, wf: Path, batch_size: int
) -> tuple[Measured, Measured, Measured]:
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        database = workdir / "crowdloop.sqlite3"
        database.unlink(missing_ok=True)  # every run imports into a fresh database
        env["DATABASE_URL"] = f"sqlite:///{database}"
    manage = [str(PYTHON), "manage.py"]
    run([*manage, "migrate", "-v", "0"], env=env)
    run([*manage, "load_vocabulary"], env=env)
    print("  " + run(
        [*manage, "configure_workflow", "--workflow-id", str(WORKFLOW_ID),
         "--workflow-export", str(wf)], env=env,
    ).strip())  # fmt: skip
    command = [
        *manage, "import_classifications", str(cls), "--workflow-id", str(WORKFLOW_ID),
        "--batch-size", str(batch_size), "-v", "0",
    ]  # fmt: skip
    print("  $ " + " ".join(command[1:]))
    first = measure(command, env=env)
    again = measure(command, env=env)
    # What any management command costs before it reads a row (Django and app imports).
    startup = measure([*manage, "check"], env=env)
    return first, again, startup


_FLOOR_SCRIPT = """
import sqlite3, sys, time
source, target, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
columns = [row[1] for row in sqlite3.connect(source).execute(
    "PRAGMA table_info(annotate_classification)") if row[1] != "id"]
names = ", ".join(columns)
rows = sqlite3.connect(source).execute(
    f"SELECT {names} FROM annotate_classification ORDER BY id").fetchall()
db = sqlite3.connect(target, isolation_level=None)
for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -131072"):
    db.execute(f"PRAGMA {pragma}")
sql = (f"INSERT INTO annotate_classification ({names}) VALUES "
       f"({', '.join('?' * len(columns))}) ON CONFLICT DO NOTHING")
start = time.perf_counter()
for at in range(0, len(rows), batch):
    db.execute("BEGIN")
    db.executemany(sql, rows[at:at + batch])
    db.execute("COMMIT")
print(f"{len(rows)} {time.perf_counter() - start:.2f}")
"""


def sqlite_floor(workdir: Path, batch_size: int) -> tuple[int, float]:
    """SQLite alone: the rows the import stored, already built, inserted into a fresh copy of
    the same table (same indexes, pragmas and transaction size) with one ``executemany`` a
    batch. No parsing, lookups or Python per row: what any importer writing them must pay."""
    target = workdir / "floor.sqlite3"
    target.unlink(missing_ok=True)
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{target}")
    run([str(PYTHON), "manage.py", "migrate", "-v", "0"], env=env)
    source = workdir / "crowdloop.sqlite3"
    out = run([str(PYTHON), "-c", _FLOOR_SCRIPT, str(source), str(target), str(batch_size)])
    rows, seconds = out.split()
    target.unlink(missing_ok=True)
    return int(rows), float(seconds)


_VARIANTS_SCRIPT = """
import os, shutil, sqlite3, sys, time
from operator import itemgetter
source, empty, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
columns = [row[1] for row in sqlite3.connect(source).execute(
    "PRAGMA table_info(annotate_classification)") if row[1] != "id"]
names = ", ".join(columns)
rows = sqlite3.connect(source).execute(
    f"SELECT {names} FROM annotate_classification ORDER BY id").fetchall()
indexes = sqlite3.connect(empty).execute(
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
    "AND tbl_name = 'annotate_classification' AND sql IS NOT NULL").fetchall()
sql = (f"INSERT INTO annotate_classification ({names}) VALUES "
       f"({', '.join('?' * len(columns))}) ON CONFLICT DO NOTHING")

def insert(label, **how):
    # The better of two runs: the first of a series also pays for a cold page cache.
    print(f"{label}\t{min(timed(**how) for _ in range(2)):.2f}", flush=True)

def timed(*, foreign_keys="OFF", order=None, checkpoint=1000, indexes_after=None, without=(),
          autoincrement=False):
    target = empty + ".run"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(target + suffix):
            os.remove(target + suffix)
    shutil.copy(empty, target)
    db = sqlite3.connect(target, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -131072",
                   f"foreign_keys = {foreign_keys}", f"wal_autocheckpoint = {checkpoint}"):
        db.execute(f"PRAGMA {pragma}")
    if autoincrement:  # the table as Django makes it by default: the key with AUTOINCREMENT
        table = db.execute("SELECT sql FROM sqlite_master WHERE name = 'annotate_classification'"
                           ).fetchone()[0]
        key = '"id" integer NOT NULL PRIMARY KEY'
        assert key in table and "AUTOINCREMENT" not in table
        db.execute("DROP TABLE annotate_classification")
        db.execute(table.replace(key, key + " AUTOINCREMENT"))
        for _, create in indexes:
            db.execute(create)
    if indexes_after is not None:
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
    for name, create in indexes:  # single-column indexes on the named columns
        if any(create.endswith(f'("{column}")') for column in without):
            db.execute(f'DROP INDEX "{name}"')
    key = itemgetter(columns.index(order)) if order else None
    start = time.perf_counter()
    for at in range(0, len(rows), batch):
        part = rows[at:at + batch]
        db.execute("BEGIN")
        db.executemany(sql, sorted(part, key=key) if key else part)
        db.execute("COMMIT")
    if indexes_after:
        db.execute("BEGIN")
        for _, create in indexes:
            db.execute(create)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seconds = time.perf_counter() - start
    db.close()
    os.remove(target)
    return seconds

insert("foreign keys not checked (as the import writes)")
insert("foreign keys checked", foreign_keys="ON")
insert("the primary key with AUTOINCREMENT (Django's default)", autoincrement=True)
insert("each batch sorted by volunteer", order="volunteer_id")
insert("each batch sorted by subject", order="subject_id")
insert("WAL checkpoint every 20,000 pages, not 1,000", checkpoint=20000)
insert("without the workflow and created_at indexes", without=("workflow_id", "created_at"))
insert("without the subject index too", without=("workflow_id", "created_at", "subject_id"))
insert("no index but the unique classification id", indexes_after=False)
insert("the same, the other indexes built after the insert", indexes_after=True)
"""


def insert_variants(workdir: Path, batch_size: int) -> list[tuple[str, float]]:
    """The stored rows inserted again into a copy of the import's database with its votes
    deleted (volunteers, subjects and items kept, so foreign keys can be checked), one way at a
    time, the better of two runs each: what each change to how the rows are written would save
    or cost."""
    source = workdir / "crowdloop.sqlite3"
    empty = workdir / "variants.sqlite3"
    empty.unlink(missing_ok=True)
    db = sqlite3.connect(empty, isolation_level=None)
    with sqlite3.connect(source) as original:
        original.backup(db)
    db.execute("DELETE FROM annotate_classification")
    db.execute("VACUUM")
    db.close()
    try:
        out = run([str(PYTHON), "-c", _VARIANTS_SCRIPT, str(source), str(empty), str(batch_size)])
    finally:
        empty.unlink(missing_ok=True)
    lines = (line.rsplit("\t", 1) for line in out.strip().splitlines())
    return [(label, float(seconds)) for label, seconds in lines]


def panoptes_side(workdir: Path, cls: Path, wf: Path) -> Measured:
    cli = panoptes_venv()
    out = workdir / "panoptes"
    out.mkdir(exist_ok=True)
    version = f"{VERSION[0]}.{VERSION[1]}"
    run([str(cli), "config", str(wf), str(WORKFLOW_ID), "-v", version, "-d", str(out)])
    configs = sorted(out.glob("Extractor_config_*.yaml"))
    if not configs:
        raise SystemExit(f"panoptes_aggregation config wrote no extractor config in {out}")
    command = [
        str(cli), "extract", str(cls), str(configs[0]), "-d", str(out), "-o", "bench",
        "-c", "1", "-hb",
    ]  # fmt: skip
    print("  $ panoptes_aggregation " + " ".join(command[1:]))
    return measure(command, cwd=workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=60_000)
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here")
    parser.add_argument("--skip-panoptes", action="store_true")
    parser.add_argument(
        "--insert-variants", action="store_true",
        help="SQLite: also time inserting the stored rows in other ways (foreign keys, primary "
        "key, order, checkpoints, indexes)",
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crowdloop-bench-import-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cls, wf = workdir / "classifications.csv", workdir / "workflows.csv"
    try:
        start = time.perf_counter()
        marker = workdir / f"rows-{args.rows}"
        if marker.exists() and cls.exists() and wf.exists():
            print(f"reusing the {args.rows:,}-row export in {workdir}")
        else:
            workflow_export_write(wf)
            classification_export_write(cls, rows=args.rows)
            marker.touch()
        size = cls.stat().st_size / 2**20
        print(
            f"{args.rows:,} rows ({size:,.0f} MiB, {size * 2**20 / args.rows:,.0f} "
            f"bytes/row), ready in {time.perf_counter() - start:.0f} s under {workdir}"
        )
        print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}, {os.cpu_count()} CPUs")
        database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
        ours, again, startup = crowdloop_side(workdir, cls, wf, args.batch_size)
        print("  " + ours.stdout.strip().splitlines()[-1])
        print("  re-import: " + again.stdout.strip().splitlines()[-1])
        table = [
            (f"crowdloop import ({database})", ours),
            (f"crowdloop re-import ({database})", again),
        ]
        floor = sqlite_floor(workdir, args.batch_size) if database == "SQLite" else None
        variants = (
            insert_variants(workdir, args.batch_size)
            if args.insert_variants and database == "SQLite"
            else []
        )
        theirs = None
        if not args.skip_panoptes:
            theirs = panoptes_side(workdir, cls, wf)
            table.append(("panoptes_aggregation extract -c 1", theirs))
        # CPU seconds (user + system) are the fairer clock on a shared machine: wall time
        # stretches with whatever else runs, CPU time much less.
        print(
            f"\n{'':38} {'wall s':>8} {'rows/s':>9} {'CPU s':>8} {'rows/CPU s':>11} "
            f"{'peak mem MiB':>13}"
        )
        for name, m in table:
            print(
                f"{name:38} {m.seconds:8.1f} {args.rows / m.seconds:9,.0f} {m.cpu_seconds:8.1f} "
                f"{args.rows / m.cpu_seconds:11,.0f} {m.peak_rss_mib:13,.0f}"
            )
        print(
            f"{'manage.py check (start-up alone)':38} {startup.seconds:8.1f} {'':>9} "
            f"{startup.cpu_seconds:8.1f} {'':>11} {startup.peak_rss_mib:13,.0f}"
        )
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}, {os.cpu_count()} CPUs")
        if floor is not None:
            print(
                f"\nSQLite alone, inserting the {floor[0]:,} stored rows ready-made into an empty "
                f"copy of the table: {floor[1]:.1f} s; the import takes "
                f"{ours.seconds / floor[1]:.1f}x that"
            )
        if variants:
            print("\nThe stored rows inserted again, into a copy of the database without votes:")
            for label, seconds in variants:
                print(f"  {label:56} {seconds:6.2f} s")
        if theirs is not None:
            print(
                f"\nspeed: crowdloop is {theirs.seconds / ours.seconds:.1f}x faster by wall time, "
                f"{theirs.cpu_seconds / ours.cpu_seconds:.1f}x by CPU time (goal >= 20x); "
                f"memory: crowdloop peaks at {ours.peak_rss_mib / theirs.peak_rss_mib:.2f} of "
                f"extract's (goal <= 0.33)"
            )
            if floor is not None:
                print(
                    f"an importer that spent nothing but SQLite's own insert would be "
                    f"{theirs.seconds / floor[1]:.1f}x faster than extract by wall time"
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
