"""How long the admin's "Retrain now" button holds the browser, on the embedded stack.

    .venv/bin/python bench/retrain_button.py [--presses 5] [--port 8797]

Starts ``manage.py serve`` (gunicorn, a Celery worker and beat on the filesystem broker) on a
scratch database under a temporary CROWDLOOP_VAR_DIR with 60 digit mosaics as items, logs in as
an admin, and presses the button ``--presses`` times, each after the previous run has ended in
the worker. Prints each answer's time, their median and range, and how long the runs themselves
took in the worker: before the loop's pipeline (issue 16) the run trained inside the request,
so the button answered only after the whole training (80 s reported on the demo).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout


def prepare(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput", "-v", "0")
    code = (
        "from loop.services.demo import demo_manifest_write, demo_vocabulary\n"
        "from annotate.services.vocabulary import vocabulary_load\n"
        "from annotate.services.items import items_import\n"
        "from annotate.models import Item, PriorLabel\n"
        "from django.contrib.auth import get_user_model\n"
        "vocabulary_load(entries=demo_vocabulary())\n"
        "m = demo_manifest_write(n=60, seed=3)\n"
        "items_import(path=m.path)\n"
        "from annotate.models import Concept\n"
        "keys = {c.key: c for c in Concept.objects.all()}\n"
        "for item in Item.objects.all():\n"
        "    item.review_state = 'edited'; item.curated_concepts = m.truth[item.external_id]\n"
        "    item.save(update_fields=['review_state', 'curated_concepts'])\n"
        "get_user_model().objects.create_superuser('bench', 'b@example.org', 'bench-pass-1234')\n"
    )
    manage(env, "shell", "-c", code)


def login(base: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    session.post(f"{base}/admin/login/", data={
        "csrfmiddlewaretoken": token, "username": "bench", "password": "bench-pass-1234",
        "next": "/admin/"}, headers={"Referer": f"{base}/admin/login/"}, timeout=30)
    return session


def press(session: requests.Session, base: str) -> tuple[float, int]:
    page = session.get(f"{base}/admin/training/trainingrun/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    started = time.perf_counter()
    response = session.post(f"{base}/admin/training/trainingrun/retrain/",
                            data={"csrfmiddlewaretoken": token},
                            headers={"Referer": f"{base}/admin/training/trainingrun/"},
                            allow_redirects=False, timeout=300)
    elapsed = time.perf_counter() - started
    run_id = int(re.search(r"/trainingrun/(\d+)/", response.headers["Location"]).group(1))
    return elapsed, run_id


def run_status(env: dict[str, str], run_id: int) -> tuple[str, float | None]:
    out = manage(env, "shell", "-c", (
        f"from training.models import TrainingRun as T; r = T.objects.get(pk={run_id}); "
        "d = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at "
        "else ''; print(r.status, d)"))
    status, _, seconds = out.strip().splitlines()[-1].partition(" ")
    return status, float(seconds) if seconds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=5)
    parser.add_argument("--port", type=int, default=8797)
    args = parser.parse_args()
    var = tempfile.mkdtemp(prefix="crowdloop-retrain-bench-")
    env = {**os.environ, "CROWDLOOP_VAR_DIR": var, "TRAINING_EPOCHS": "4"}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    prepare(env)
    server = subprocess.Popen([PYTHON, "manage.py", "serve", "--port", str(args.port)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(120):
            try:
                if requests.get(f"{base}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        session = login(base)
        answers, trainings = [], []
        for i in range(args.presses):
            elapsed, run_id = press(session, base)
            answers.append(elapsed)
            while True:
                status, seconds = run_status(env, run_id)
                if status in ("succeeded", "failed"):
                    break
                time.sleep(1.0)
            trainings.append(seconds or 0.0)
            print(f"press {i + 1}: answered in {elapsed * 1000:7.1f} ms; run {run_id} "
                  f"{status} in the worker after {seconds:.1f} s of training")
        print(f"'Retrain now' answers in: median {statistics.median(answers) * 1000:.0f} ms "
              f"(range {min(answers) * 1000:.0f}-{max(answers) * 1000:.0f} ms, "
              f"{len(answers)} presses); goal under 1 s: "
              f"{'met' if statistics.median(answers) < 1 else 'not met'}")
        print(f"the runs themselves, in the worker: median {statistics.median(trainings):.1f} s "
              f"(what a press held the browser for when tasks ran inside the request)")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
