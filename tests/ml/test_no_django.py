"""ml/ stays pure: importing every module of it pulls in no Django and no crowdloop app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import ml
names = sorted(m.name for m in pkgutil.iter_modules(ml.__path__, "ml."))
for name in names:
    importlib.import_module(name)
roots = ("django", "annotate", "training", "config", "rest_framework")
banned = sorted(m for m in sys.modules if m.split(".")[0] in roots)
print(json.dumps({"modules": names, "banned": banned}))
"""


def test_importing_every_ml_module_imports_no_django_annotate_or_training():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"ml.models", "ml.train", "ml.data", "ml.checkpoint", "ml.embeddings", "ml.explain",
            "ml.metrics"} <= set(result["modules"])
    assert result["banned"] == []
