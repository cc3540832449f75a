"""Every setting comes from the environment and changes what the code does; the README's
configuration table names only variables that something reads."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.settings_env import FROM_ENV, settings_in_subprocess

ROOT = Path(__file__).resolve().parent.parent


#: The defaults, the same the code fell back to before these were settings.
DEFAULTS: dict[str, object] = {
    "TRAIN_AFTER_NEW_LABELS": 200,
    "TRAINING_DEVICE": "auto",
    "TRAINING_BACKBONE": "small_cnn",
    "TRAINING_EPOCHS": 12,
    "TRAINING_BACKBONE_WEIGHTS": {},
    "TRAINING_WEIGHTS_BASE_URL": "",
    "TRAINING_MIN_ITEMS": 10,
    "TRAINING_MIN_VOTES": 2,
    "TRAINING_MIN_CONFIDENCE": 0.5,
    "TRAINING_FULL_EVIDENCE_VOTES": 5,
    "TRAINING_CURATED_WEIGHT": 1.0,
    "TRAINING_PATIENCE": 5,
    "TRAINING_LEASE_SECONDS": 900,
    "TRAINING_MAX_ATTEMPTS": 3,
    "TRAINING_REQUEUE_AFTER_SECONDS": 300.0,
    "TRAINING_TIME_LIMIT_SECONDS": 0,
    "TRAINING_SCORE_BATCH_SIZE": 64,
    "TRAINING_SCORE_CHUNK_SIZE": 2000,
    "TRAINING_SCORE_CANDIDATES": False,
    "PANOPTES_CONNECT_TIMEOUT": 5.0,
    "PANOPTES_MAX_ATTEMPTS": 6,
    "PANOPTES_BUDGET": 1800.0,
    "ZOONIVERSE_EXPORT_MAX_BYTES": 2 * 1024**3,
    "CONTENT_SECURITY_POLICY": "",
    "TRUSTED_PROXIES": [],
    "ADMIN_LOGIN_FAILURE_LIMIT": 5,
    "ADMIN_LOGIN_COOLOFF_MINUTES": 15,
}


def test_every_setting_is_read_from_its_environment_variable():
    env = {name: raw for name, (raw, _) in FROM_ENV.items()}
    result = settings_in_subprocess(env, list(FROM_ENV))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {name: want for name, (_, want) in FROM_ENV.items()}


def test_without_the_environment_the_settings_keep_the_codes_old_defaults():
    assert set(DEFAULTS) == set(FROM_ENV)
    assert all(DEFAULTS[name] != want for name, (_, want) in FROM_ENV.items())
    result = settings_in_subprocess({}, list(DEFAULTS))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == DEFAULTS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRAINING_BACKBONE_WEIGHTS", "resnet18"),
        ("TRAINING_BACKBONE_WEIGHTS", "=/weights/r18.pth"),
        ("TRAINING_BACKBONE_WEIGHTS", "resnet18=/a.pth,resnet18=/b.pth"),
        ("TRAINING_BACKBONE_WEIGHTS", "resnet99=/a.pth"),
        ("TRAINING_BACKBONE_WEIGHTS", "resnet18=IMAGENET1K_V2"),
        ("TRAINING_BACKBONE_WEIGHTS", "resnet18=https://example.org/r18.pth"),
        ("TRAINING_WEIGHTS_BASE_URL", "mirror.example.org/models"),
        ("TRAINING_EPOCHS", "0"),
        ("TRAIN_AFTER_NEW_LABELS", "-1"),
        ("TRAINING_DEVICE", "gpu"),
        ("TRAINING_MIN_CONFIDENCE", "1.5"),
        ("PANOPTES_MAX_ATTEMPTS", "many"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TRUSTED_PROXIES", "proxy.example.org"),
        ("ADMIN_LOGIN_FAILURE_LIMIT", "0"),
        ("ADMIN_LOGIN_COOLOFF_MINUTES", "soon"),
        ("API_THROTTLE_AUTH_FAILURES", "lots"),
        ("API_THROTTLE_AUTH_PREFIX_FAILURES", "0/hour"),
        ("API_THROTTLE_ANON", "60 / minute"),
    ],
)
def test_a_malformed_value_is_refused_naming_its_variable(name, value):
    result = settings_in_subprocess({name: value}, [name])
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr


# -- S7, S22: production refuses a weak SECRET_KEY ---------------------------------------------

STRONG_KEY = "k" * 20 + "-Zq8v!x2Lr0#mT5pW9sJ4nB7cF1hD6gK3"
PRODUCTION = {"CROWDLOOP_ENV": "production", "ALLOWED_HOSTS": "crowdloop.example.org"}


@pytest.mark.parametrize(
    "key",
    [
        "a" * 60,
        " " * 60,
        "\t \t" * 20,
        "abcd" * 15,
        "django-insecure-" + STRONG_KEY,
        "  " + STRONG_KEY,
        STRONG_KEY + " \n",
        STRONG_KEY[:49],
    ],
    ids=["one-char", "spaces", "whitespace", "four-chars", "insecure", "lead-ws", "trail-ws", "49"],
)
def test_production_refuses_a_secret_key_django_calls_weak_or_padded_with_whitespace(key):
    """Reliability S22, S7."""
    result = settings_in_subprocess({**PRODUCTION, "SECRET_KEY": key}, ["DEBUG"])
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY is too weak" in result.stderr
    assert key.strip() == "" or key.strip() not in result.stderr  # the key is never printed


def test_production_takes_a_strong_secret_key_as_it_is():
    """Reliability S7."""
    result = settings_in_subprocess({**PRODUCTION, "SECRET_KEY": STRONG_KEY}, ["SECRET_KEY"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"SECRET_KEY": STRONG_KEY}


def test_the_login_and_token_limits_reach_axes_and_the_api_throttles():
    """Reliability S15, S19: the variables set what the lockouts count."""
    env = {
        "ADMIN_LOGIN_FAILURE_LIMIT": "3",
        "API_THROTTLE_AUTH_FAILURES": "7/day",
        "API_THROTTLE_AUTH_PREFIX_FAILURES": "9/hour",
    }
    result = settings_in_subprocess(env, ["AXES_FAILURE_LIMIT", "REST_FRAMEWORK"])
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["AXES_FAILURE_LIMIT"] == 3
    assert loaded["REST_FRAMEWORK"]["NUM_PROXIES"] == 0
    rates = loaded["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]
    assert (rates["auth_failures"], rates["auth_prefix_failures"]) == ("7/day", "9/hour")


def test_admin_login_cooloff_minutes_is_axes_cool_off():
    """Reliability S19."""
    code = "from django.conf import settings as s; print(s.AXES_COOLOFF_TIME.total_seconds())"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env["ADMIN_LOGIN_COOLOFF_MINUTES"] = "30"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "1800.0", result.stderr


# -- each setting changes behaviour ------------------------------------------------------------


def test_training_epochs_and_backbone_are_a_runs_defaults(settings):
    from training.services.params import training_params_parse

    settings.TRAINING_BACKBONE_WEIGHTS = {}
    settings.TRAINING_EPOCHS = 1
    settings.TRAINING_BACKBONE = "resnet18"
    params = training_params_parse({})
    assert (params.backbone, params.epochs, params.mode) == ("resnet18", 1, "finetune")
    # A request's own parameters still win over the settings.
    params = training_params_parse({"backbone": "small_cnn", "epochs": 3})
    assert (params.backbone, params.epochs) == ("small_cnn", 3)


def test_backbone_weights_give_the_file_and_make_head_training_the_default(settings, tmp_path):
    from training.services.execute import _config
    from training.services.params import backbone_weights, training_params_parse

    weights = tmp_path / "resnet18.pth"
    settings.TRAINING_BACKBONE_WEIGHTS = {}
    assert backbone_weights("resnet18") is None
    assert training_params_parse({"backbone": "resnet18"}).mode == "finetune"

    settings.TRAINING_BACKBONE_WEIGHTS = {"resnet18": str(weights)}
    assert backbone_weights("resnet18") == str(weights)
    assert backbone_weights("resnet50") is None
    params = training_params_parse({"backbone": "resnet18"})
    assert params.mode == "head"
    assert _config(params.as_json()).weights == str(weights)


def test_training_device_is_the_device_training_and_scoring_use(settings):
    from training.services.execute import _config
    from training.services.params import training_device, training_params_parse

    params = training_params_parse({}).as_json()
    for device in ("cuda:3", "cpu"):
        settings.TRAINING_DEVICE = device
        assert _config(params).device == device
        assert training_device() == device


def test_train_after_new_labels_sets_when_a_run_is_requested(db, settings, monkeypatch):
    from tests.training.builders import write_mosaic_items
    from training.models import TrainingRun
    from training.services.triggers import training_maybe_trigger

    monkeypatch.setattr("training.tasks.training_run_task.apply_async", lambda *a, **k: None)
    write_mosaic_items(20)
    settings.TRAIN_AFTER_NEW_LABELS = 21
    assert training_maybe_trigger() is None
    assert not TrainingRun.objects.exists()
    settings.TRAIN_AFTER_NEW_LABELS = 20
    run = training_maybe_trigger()
    assert run is not None and run.trigger == "auto"


def test_training_job_settings_reach_the_run_and_its_task(db, settings):
    from training.services.execute import _config
    from training.services.params import training_params_parse
    from training.services.runs import training_run_request
    from training.tasks import _train_limits

    settings.TRAINING_LEASE_SECONDS = 123
    settings.TRAINING_PATIENCE = 2
    settings.TRAINING_MAX_ATTEMPTS = 7
    settings.TRAINING_TIME_LIMIT_SECONDS = 3600
    params = training_params_parse({})
    assert params.lease_seconds == 123
    assert _config(params.as_json()).patience == 2
    assert _train_limits() == (3540, 3600)
    run, _ = training_run_request(trigger="api", params={})
    assert run.max_attempts == 7


def test_zooniverse_client_limits_come_from_the_settings(settings):
    from annotate.zooniverse.client import policy_from_settings

    settings.PANOPTES_CONNECT_TIMEOUT = 2.5
    settings.PANOPTES_TIMEOUT = 11.0
    settings.PANOPTES_MAX_ATTEMPTS = 2
    settings.PANOPTES_BUDGET = 600.0
    policy = policy_from_settings()
    assert (policy.connect_timeout_s, policy.read_timeout_s) == (2.5, 11.0)
    assert (policy.max_attempts, policy.budget_s) == (2, 600.0)


def test_the_export_download_is_capped_at_zooniverse_export_max_bytes(settings):
    from annotate.models import Workflow
    from annotate.services.zooniverse.pull import classifications_export_pull

    class Refused(Exception):
        pass

    class Client:
        @contextlib.contextmanager
        def operation(self):
            yield

        def export_fetch(self, *, max_bytes, **_):
            raise Refused(max_bytes)

    settings.ZOONIVERSE_EXPORT_MAX_BYTES = 1234
    with pytest.raises(Refused) as caught:
        classifications_export_pull(workflow=Workflow(zooniverse_id=1), client=Client())
    assert caught.value.args == (1234,)


def test_content_security_policy_replaces_the_default_header(client, settings):
    from config.middleware import DEFAULT_CONTENT_SECURITY_POLICY

    assert client.get("/admin/login/")["Content-Security-Policy"] == (
        DEFAULT_CONTENT_SECURITY_POLICY
    )
    settings.CONTENT_SECURITY_POLICY = "default-src 'none'"
    assert client.get("/admin/login/")["Content-Security-Policy"] == "default-src 'none'"


# -- the README names only variables that are read ---------------------------------------------

READER_DIRS = ("config", "annotate", "training", "loop", "ml")


def _sources() -> dict[str, str]:
    files = [p for d in READER_DIRS for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "Makefile", ROOT / "docker-compose.yml"]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files if p.exists()}


def readers_of(name: str, sources: dict[str, str]) -> list[str]:
    """The files that read ``name`` from the environment."""
    quoted = rf"""\(\s*["']{name}["']"""
    patterns = [
        rf"(?:os\.environ\.get|os\.getenv|env_\w+){quoted}",  # env_int("NAME", ...), ...
        rf"""os\.environ\[\s*["']{name}["']\s*\]""",
        rf"\$[({{]{name}\b",  # $(NAME) in the Makefile, ${NAME} in docker-compose.yml
        rf"(?m)^{name}\s*\??=",  # NAME ?= default in the Makefile
    ]
    return [
        path for path, text in sources.items() if any(re.search(p, text) for p in patterns)
    ]


def readme_table_variables() -> list[str]:
    names = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            spans = re.findall(r"`([^`]+)`", first)
            names += [n for n in spans if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)]
    return names


def test_every_variable_in_the_readme_tables_is_read_from_the_environment():
    names = readme_table_variables()
    assert len(names) >= 40 and {"TRAINING_EPOCHS", "PORT", "LOG_LEVEL"} <= set(names)
    sources = _sources()
    assert readers_of("NO_SUCH_CROWDLOOP_SETTING", sources) == []
    unread = [name for name in names if not readers_of(name, sources)]
    assert unread == [], f"README.md names variables nothing reads: {unread}"
