"""The offline demo's accounts: one per role, each holding its group, written down to read."""

from __future__ import annotations

import pytest

from annotate.roles import role_permissions
from loop.services.demo import demo_accounts

pytestmark = pytest.mark.django_db


def test_the_demo_accounts_hold_their_roles(settings, tmp_path, django_user_model):
    settings.VAR_DIR = tmp_path
    accounts = {a.username: a.role for a in demo_accounts()}
    assert accounts == {"curator": "curator", "admin": "admin"}
    for username, role in accounts.items():
        user = django_user_model.objects.get(username=username)
        assert [g.name for g in user.groups.all()] == [role]
        assert set(user.groups.get().permissions.all()) == set(role_permissions(role))
    assert (tmp_path / "demo" / "credentials.txt").read_text().count("\n") == 2


def test_the_demo_refuses_to_serve_on_the_stand_ins_port():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="stand-in's port"):
        call_command("demo", "--serve", "--port", "8765", "--sandbox-port", "8765")


def test_the_embedded_worker_stops_by_waiting_for_its_task_and_does_not_warn_about_sigterm():
    from config.celery import sigterm_warning
    from loop.services.processes import embedded_specs

    worker = next(spec for spec in embedded_specs(port=8123) if spec.name == "worker")
    timeout = float(worker.env["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"])
    assert timeout == 0
    assert sigterm_warning(soft_shutdown_timeout=timeout, remap_sigterm=None) is None
