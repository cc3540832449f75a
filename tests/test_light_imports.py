"""Processes that only read or import data must not pay for PyTorch (about 1 GB and seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import django

django.setup()
import config.urls  # the URLconf, as the system checks and every web process load it
from django.core.management import call_command, load_command_class

call_command("check", verbosity=0)
for name in ("import_classifications", "sync_zooniverse", "aggregate", "export_dataset"):
    load_command_class("annotate", name)
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_setup_urlconf_checks_and_data_commands_do_not_import_torch() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_checking_a_training_request_does_not_import_torch() -> None:
    """The "Retrain now" button and the API check a request's parameters in the web process."""
    probe = (
        "import sys, django; django.setup()\n"
        "from training.services.params import training_params_parse\n"
        "training_params_parse({'backbone': 'resnet18', 'epochs': 2})\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_the_loop_panel_and_the_dashboard_do_not_import_torch() -> None:
    """The panel refreshes every 10 s; its first answer in a web process took 4.5 s when counting
    the training set imported PyTorch (through ``ml.data``) for a hash split."""
    probe = (
        "import sys, django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.test import Client\n"
        "user = get_user_model().objects.create_superuser('probe', password='x' * 20)\n"
        "client = Client(); client.force_login(user)\n"
        "assert client.get('/api/v1/loop/').status_code == 200\n"
        "assert client.get('/review/dashboard/').status_code == 200\n"
        "print('torch' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": "sqlite:///:memory:",
    }
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
