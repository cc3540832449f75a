"""The OpenAPI schema states, for every operation, the permission it needs and the roles that
hold it; the docs page shows the same."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

from annotate.api.permissions import policy_for
from annotate.roles import roles_holding


def required_permission(view, method: str) -> dict[str, Any] | None:
    if not getattr(view, "policy", None):
        # A view of another app, without a policy table: describe its permission classes.
        classes = (
            [type(p) for p in view.get_permissions()] if hasattr(view, "get_permissions") else []
        )
        if not classes:
            return None
        names = ", ".join(c.__name__ for c in classes)
        doc = " ".join((c.__doc__ or "").strip().split("\n")[0] for c in classes).strip()
        perms = [getattr(c, "perm", "") for c in classes]
        if len(classes) == 1 and perms[0]:
            # One of our permission classes, given directly (the schema view): its roles are known.
            return {
                "class": names,
                "permission": perms[0],
                "roles": roles_holding(perms[0]),
                "description": doc,
            }
        return {"class": names, "permission": names, "roles": [], "description": doc}
    permission = policy_for(view, method)
    doc = (permission.__doc__ or "").strip().split("\n")[0]
    perm = getattr(permission, "perm", "")
    return {
        "class": permission.__name__,
        "permission": perm,
        "roles": roles_holding(perm),
        "description": doc,
    }


class PolicyAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        required = required_permission(self.view, method)
        if required:
            operation["x-required-permission"] = required
            roles = ", ".join(required["roles"]) or "nobody"
            note = f"**Requires** `{required['permission']}` (roles: {roles})."
            operation["description"] = f"{note}\n\n{operation.get('description', '')}".strip()
        return operation
