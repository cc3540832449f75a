"""Permission classes, one model permission each (``HasPermission``); the roles that hold them
are in ``annotate.roles``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from annotate import roles


class HasPermission(BasePermission):
    """One model permission (``perm``), as every API permission is: the account's roles decide,
    not ``is_staff`` (the admin site's flag; a viewer reads through the API without the admin)."""

    perm = ""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(self.perm))


class CanRead(HasPermission):
    """Read the crowd and model data (viewer, curator, staff, admin)."""

    perm = roles.PERM_READ


class CanReview(HasPermission):
    """Record curator decisions (curator, staff, admin)."""

    perm = roles.PERM_REVIEW


class CanRelease(HasPermission):
    """Make dataset releases (staff, admin)."""

    perm = roles.PERM_RELEASE


class CanRunRounds(HasPermission):
    """Choose and push rounds (staff, admin)."""

    perm = roles.PERM_ROUNDS


class CanPredict(HasPermission):
    """Ask the active model for scores on an uploaded image or URL (staff, admin): each call costs
    an image fetch and a forward pass, so it is not open to every reader."""

    perm = roles.PERM_RETRAIN


class _APIView(Protocol):
    """What :class:`PolicyMixin` uses of the API view it is mixed into."""

    request: Request


class PolicyMixin:
    """Each view lists the permission every action needs, in one table the docs read too.

    ``policy`` maps a viewset action (``list``, ``retrieve``, ``create``, ``download``) or, for
    a plain API view, a lower-case HTTP method, to one permission class. OPTIONS needs what
    reading needs; a method the view does not offer needs reading (so readers get 405, others 403).
    """

    policy: Mapping[str, type[BasePermission]] = {}

    def get_permissions(self: _APIView) -> list[BasePermission]:
        assert self.request.method is not None, "a request DRF dispatches always has a method"
        return [policy_for(self, self.request.method)()]


def policy_for(view, method: str) -> type[BasePermission]:
    assert getattr(view, "policy", None), (
        f"{type(view).__name__} has no policy: give it a dict of action -> permission class"
    )
    action = getattr(view, "action", None) or method.lower()
    if action in ("metadata", "options"):
        return CanRead
    return view.policy.get(action, CanRead)
