"""Settings come from the environment, and production refuses to start without what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def django_setup(env: dict[str, str], code: str = "") -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECRET_KEY", "CROWDLOOP", "DJANGO"))
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = django_setup({"CROWDLOOP_ENV": "production"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("key", ["short", "django-insecure-" + "x" * 60])
def test_production_refuses_a_weak_secret_key(key):
    result = django_setup({"CROWDLOOP_ENV": "production", "SECRET_KEY": key})
    assert result.returncode != 0
    assert "too weak" in result.stderr


def test_production_settings_pass_the_deployment_checks():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **os.environ,
            "CROWDLOOP_ENV": "production",
            "SECRET_KEY": "k" * 20 + "-Zq8v!x2Lr0#mT5pW9sJ4nB7cF1hD6gK3",
            "ALLOWED_HOSTS": "crowdloop.example.org",
            "DJANGO_DEBUG": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_debug_is_off_unless_asked():
    result = django_setup({}, "from django.conf import settings; print(settings.DEBUG)")
    assert result.stdout.strip() == "False"
    result = django_setup(
        {"DJANGO_DEBUG": "1"}, "from django.conf import settings; print(settings.DEBUG)"
    )
    assert result.stdout.strip() == "True"


def test_celery_speaks_json_only():
    from config.celery import app

    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] >= 3600


def test_without_redis_tasks_still_go_to_a_worker_through_the_filesystem_broker(tmp_path):
    code = (
        "from config.celery import app; c = app.conf; "
        "print(c.task_always_eager, c.broker_url, c.broker_transport_options['data_folder_in'])"
    )
    result = django_setup({"REDIS_URL": "", "CELERY_BROKER_DIR": str(tmp_path)}, code)
    eager, url, folder = result.stdout.split()
    assert (eager, url) == ("False", "filesystem://")
    assert folder == str(tmp_path / "queue") and (tmp_path / "queue").is_dir()


def test_with_redis_tasks_go_to_redis_and_never_run_in_process():
    code = "from config.celery import app; print(app.conf.task_always_eager, app.conf.broker_url)"
    result = django_setup({"REDIS_URL": "redis://127.0.0.1:6399/3"}, code)
    assert result.stdout.split() == ["False", "redis://127.0.0.1:6399/3"]


def test_throttles_count_in_redis_when_there_is_one_and_in_memory_otherwise():
    code = "from django.conf import settings; c = settings.CACHES['default']; print(c['BACKEND'])"
    with_redis = django_setup(
        {"REDIS_URL": "redis://127.0.0.1:6399/3"}, code + "; print(c['LOCATION'])"
    )
    assert with_redis.stdout.split() == [
        "django.core.cache.backends.redis.RedisCache",
        "redis://127.0.0.1:6399/3",
    ]
    without = django_setup({"REDIS_URL": ""}, code)
    assert without.stdout.strip() == "django.core.cache.backends.locmem.LocMemCache"
