"""Roles as Django groups: viewer, curator, staff, admin. Each is a set of model permissions.

A viewer reads everything on the crowd and model side and the loop's log (``view_*``); a curator
also reviews labels (``add_review``, ``change_item``); staff also run the loop (rounds,
retraining, model versions, dataset releases); an admin holds every permission of the project's
apps and of user management. The API and the admin check *permissions*, never group names, so a
deployment can compose its own groups; these four are the defaults, created and brought up to
date by ``manage.py setup_roles`` and by :func:`roles_setup` after every ``migrate`` (connected in
``AnnotateConfig.ready``). Accounts are made by an admin; one with no group sees nothing.
"""

from __future__ import annotations

from typing import cast

from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.db.models import Q

VIEWER, CURATOR, STAFF, ADMIN = "viewer", "curator", "staff", "admin"
ROLES = (VIEWER, CURATOR, STAFF, ADMIN)
#: The apps whose permissions the roles hand out, by label only (``loop`` is imported nowhere here:
#: the layers run annotate <- training <- loop). The loop's models are written by the pipeline
#: alone, so its admin offers every role nothing but ``view_*``.
APPS = ("annotate", "training", "loop")

#: The permission each API policy asks for (``app_label.codename``).
PERM_READ = "annotate.view_item"
PERM_REVIEW = "annotate.add_review"
PERM_RELEASE = "annotate.add_datasetrelease"
PERM_ROUNDS = "annotate.add_round"
PERM_RETRAIN = "training.add_trainingrun"
PERM_VIEW_TRAINING = "training.view_trainingrun"

# Beyond ``view_*``: what each role adds to the one before it, as (app_label, codename prefix or
# codename). Codenames of models that do not exist (yet) are simply skipped.
_CURATOR_EXTRA = (("annotate", "add_review"), ("annotate", "change_item"))
_STAFF_EXTRA = (
    ("annotate", "add_round"),
    ("annotate", "change_round"),
    ("annotate", "add_datasetrelease"),
    # Excluding a spammer from aggregation (audited, reversible) is a staff decision.
    ("annotate", "add_volunteerexclusion"),
    ("training", "add_"),
    ("training", "change_"),
)


def signed_in(user: User | AnonymousUser) -> User:
    """``request.user`` behind a view or an admin action that checks a permission, as the account
    it is: an anonymous user holds no permission, so it never gets that far."""
    return cast(User, user)


def _matching(pairs: tuple[tuple[str, str], ...]) -> Q:
    query = Q(pk__in=[])
    for app_label, code in pairs:
        match = Q(codename__startswith=code) if code.endswith("_") else Q(codename=code)
        query |= Q(content_type__app_label=app_label) & match
    return query


#: Which default roles hold each permission the API asks for (checked against
#: :func:`role_permissions` by the tests).
ROLES_HOLDING = {
    PERM_READ: (VIEWER, CURATOR, STAFF, ADMIN),
    PERM_REVIEW: (CURATOR, STAFF, ADMIN),
    PERM_RELEASE: (STAFF, ADMIN),
    PERM_ROUNDS: (STAFF, ADMIN),
    PERM_RETRAIN: (STAFF, ADMIN),
    PERM_VIEW_TRAINING: (VIEWER, CURATOR, STAFF, ADMIN),
}


def roles_holding(perm: str) -> list[str]:
    return list(ROLES_HOLDING.get(perm, (ADMIN,)))


def role_permissions(role: str) -> list[Permission]:
    """The permissions of a role, from those that exist in the database now."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == ADMIN:
        query = Q(content_type__app_label__in=[*APPS, "auth"])
    else:
        query = Q(content_type__app_label__in=APPS, codename__startswith="view_")
        if role in (CURATOR, STAFF):
            query |= _matching(_CURATOR_EXTRA)
        if role == STAFF:
            query |= _matching(_STAFF_EXTRA)
    return list(Permission.objects.filter(query).select_related("content_type"))


def roles_setup() -> dict[str, int]:
    """Create the four groups and set their permissions; safe to run any number of times.

    Returns the number of permissions of each group.
    """
    counts = {}
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        permissions = role_permissions(role)
        group.permissions.set(permissions)
        counts[role] = len(permissions)
    return counts


def _after_migrate(sender, app_config=None, **kwargs) -> None:
    # post_migrate is sent once per app, in INSTALLED_APPS order, and each app's permissions are
    # created by its own signal: set the groups up at the last app's, when every one exists.
    from django.apps import apps

    last = [config for config in apps.get_app_configs() if config.models_module is not None][-1]
    if app_config is last:
        roles_setup()


def connect_post_migrate() -> None:
    """Called by ``AnnotateConfig.ready``: the groups are set up after every migrate (and every
    flush), once the permissions of every app exist."""
    from django.db.models.signals import post_migrate

    post_migrate.connect(_after_migrate, dispatch_uid="annotate.roles_setup")
