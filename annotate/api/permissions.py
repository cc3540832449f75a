"""Permission classes, one permission each. The roles that hold them are in ``annotate.roles``."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from annotate import roles


class CanRead(BasePermission):
    """Read the crowd and model data (viewer, curator, staff, admin)."""

    perm = roles.PERM_READ

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return bool(request.user and request.user.has_perm(self.perm))


class CanReview(BasePermission):
    """Record curator decisions (curator, staff, admin)."""

    perm = roles.PERM_REVIEW

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return bool(request.user and request.user.has_perm(self.perm))


class CanRelease(BasePermission):
    """Make dataset releases (staff, admin)."""

    perm = roles.PERM_RELEASE

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return bool(request.user and request.user.has_perm(self.perm))


class CanRunRounds(BasePermission):
    """Choose and push rounds (staff, admin)."""

    perm = roles.PERM_ROUNDS

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return bool(request.user and request.user.has_perm(self.perm))


class CanPredict(BasePermission):
    """Ask the active model for scores on an uploaded image or URL (staff, admin): each call costs
    an image fetch and a forward pass, so it is not open to every reader."""

    perm = roles.PERM_RETRAIN

    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return bool(request.user and request.user.has_perm(self.perm))


class PolicyMixin:
    """Each view lists the permission every action needs, in one table the docs read too.

    ``policy`` maps a viewset action (``list``, ``retrieve``, ``create``, ``download``) or, for
    a plain API view, a lower-case HTTP method, to one permission class. OPTIONS needs what
    reading needs; a method the view does not offer needs reading (so readers get 405, others 403).
    """

    policy: dict[str, type[BasePermission]] = {}

    def get_permissions(self) -> list[BasePermission]:
        return [policy_for(self, self.request.method)()]  # type: ignore[attr-defined]


def policy_for(view, method: str) -> type[BasePermission]:  # type: ignore[no-untyped-def]
    assert getattr(view, "policy", None), (
        f"{type(view).__name__} has no policy: give it a dict of action -> permission class"
    )
    action = getattr(view, "action", None) or method.lower()
    if action in ("metadata", "options"):
        return CanRead
    return view.policy.get(action, CanRead)
