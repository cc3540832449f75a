"""Roles as groups: what each holds, that setting them up twice changes nothing, and that the
table the API docs show agrees with the groups."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from annotate.roles import ROLES, ROLES_HOLDING, role_permissions, roles_setup

pytestmark = pytest.mark.django_db


def codes(role: str) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in role_permissions(role)}


def test_the_four_groups_exist_after_setup_and_a_second_run_changes_nothing():
    first = roles_setup()
    second = roles_setup()
    assert first == second
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)


def test_a_viewer_only_reads():
    viewer = codes("viewer")
    assert "annotate.view_item" in viewer and "annotate.view_datasetrelease" in viewer
    assert all(code.split(".")[1].startswith("view_") for code in viewer)


def test_a_curator_reviews_but_makes_no_release_and_trains_nothing():
    curator = codes("curator")
    assert {"annotate.add_review", "annotate.change_item"} <= curator
    assert "annotate.add_datasetrelease" not in curator
    assert not any(c.startswith("training.add_") for c in curator)


def test_staff_run_rounds_retraining_and_releases_but_manage_no_users():
    staff = codes("staff")
    assert {"annotate.add_round", "annotate.add_datasetrelease", "annotate.add_review"} <= staff
    assert "training.add_trainingrun" in staff
    assert not any(c.startswith("auth.") for c in staff)
    assert not any(c.split(".")[1].startswith("delete_") for c in staff)


def test_admins_manage_users():
    assert {"auth.add_user", "auth.change_user"} <= codes("admin")


def test_each_role_holds_what_the_api_docs_say_it_holds():
    for perm, holders in ROLES_HOLDING.items():
        for role in ROLES:
            assert (perm in codes(role)) == (role in holders), (perm, role)


def test_an_unknown_role_is_refused():
    with pytest.raises(ValueError):
        role_permissions("superhero")


def test_the_command_sets_up_the_groups_and_prints_one_line():
    out = io.StringIO()
    call_command("setup_roles", stdout=out)
    assert out.getvalue().startswith("setup_roles:") and out.getvalue().count("\n") == 1
    assert Group.objects.get(name="staff").permissions.filter(codename="add_datasetrelease")


def test_every_migrate_brings_the_groups_back_with_every_apps_permissions():
    from django.apps import apps

    from annotate.roles import _after_migrate

    Group.objects.filter(name__in=ROLES).delete()
    # Not at annotate's own signal: training's permissions come after it on a fresh database.
    _after_migrate(None, app_config=apps.get_app_config("annotate"))
    assert not Group.objects.filter(name__in=ROLES).exists()
    call_command("migrate", verbosity=0)
    assert Group.objects.filter(name__in=ROLES).count() == 4
    staff = Group.objects.get(name="staff").permissions
    assert staff.filter(content_type__app_label="training", codename="add_trainingrun").exists()
