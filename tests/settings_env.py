"""Settings loaded from the environment in a fresh interpreter, and every setting read from an
environment variable with a value unlike its default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Each setting with an environment value unlike its default, and what settings must then hold.
FROM_ENV: dict[str, tuple[str, object]] = {
    "TRAIN_AFTER_NEW_LABELS": ("7", 7),
    "TRAINING_DEVICE": ("cuda:1", "cuda:1"),
    "TRAINING_BACKBONE": ("resnet18", "resnet18"),
    "TRAINING_EPOCHS": ("1", 1),
    "TRAINING_BACKBONE_WEIGHTS": (
        "resnet18=/weights/r18.pth, resnet50=IMAGENET1K_V2",
        {"resnet18": "/weights/r18.pth", "resnet50": "IMAGENET1K_V2"},
    ),
    "TRAINING_WEIGHTS_BASE_URL": (
        "http://mirror.example.org/models",
        "http://mirror.example.org/models",
    ),
    "TRAINING_MIN_ITEMS": ("3", 3),
    "TRAINING_MIN_VOTES": ("4", 4),
    "TRAINING_MIN_CONFIDENCE": ("0.8", 0.8),
    "TRAINING_FULL_EVIDENCE_VOTES": ("9", 9),
    "TRAINING_CURATED_WEIGHT": ("2.5", 2.5),
    "TRAINING_PATIENCE": ("2", 2),
    "TRAINING_LEASE_SECONDS": ("120", 120),
    "TRAINING_MAX_ATTEMPTS": ("5", 5),
    "TRAINING_REQUEUE_AFTER_SECONDS": ("45", 45.0),
    "TRAINING_TIME_LIMIT_SECONDS": ("3600", 3600),
    "TRAINING_SCORE_BATCH_SIZE": ("16", 16),
    "TRAINING_SCORE_CHUNK_SIZE": ("500", 500),
    "TRAINING_SCORE_CANDIDATES": ("1", True),
    "PANOPTES_CONNECT_TIMEOUT": ("2.5", 2.5),
    "PANOPTES_MAX_ATTEMPTS": ("2", 2),
    "PANOPTES_BUDGET": ("600", 600.0),
    "ZOONIVERSE_EXPORT_MAX_BYTES": ("1048576", 1048576),
    "CONTENT_SECURITY_POLICY": ("default-src 'none'", "default-src 'none'"),
    "TRUSTED_PROXIES": ("10.0.0.0/8, 192.0.2.1", ["10.0.0.0/8", "192.0.2.1"]),
    "ADMIN_LOGIN_FAILURE_LIMIT": ("3", 3),
    "ADMIN_LOGIN_COOLOFF_MINUTES": ("30", 30),
}


def settings_in_subprocess(env: dict[str, str], names: list[str]) -> subprocess.CompletedProcess:
    """Load config.settings in a fresh interpreter under ``env`` and print ``names`` as JSON."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in FROM_ENV and not k.startswith(("SECRET_KEY", "CROWDLOOP", "DJANGO"))
    }
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
