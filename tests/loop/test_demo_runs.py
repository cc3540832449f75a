"""The demo as a user runs it (without --serve): its own SQLite database, the Zooniverse stand-in
and a Celery worker as child processes, the scripted rounds, and labels that match the truth.

A change anywhere between the stand-in's answers and the labels (answer maps, label matching,
aggregation) shows here as labels that stop matching the digits the mosaics show.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_scripted_demo_ends_in_labels_that_match_the_truth_and_a_release(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("PANOPTES_")}
    env.update(CROWDLOOP_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "manage.py", "demo", "--reset", "--items", "80", "--first-round", "30",
         "--next-round", "20", "--epochs", "2", "--port", str(_free_port()),
         "--sandbox-port", str(_free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=360,
    )
    log = (tmp_path / "demo" / "processes.log")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (
        log.read_text()[-3000:] if log.exists() else "")
    out = done.stdout
    assert "0 answers unmapped" in out
    matches = [float(m) for m in re.findall(r"match the truth exactly on ([\d.]+)%", out)]
    assert len(matches) == 2 and min(matches) >= 60.0, out
    assert re.search(r"loop, retire: done: \d+ subjects retired", out), out
    assert re.search(r"train: run \d+ succeeded, active model v\d+", out), out
    assert "release v1: succeeded" in out and "demo done" in out
    # Every process it started is gone.
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
