from __future__ import annotations

from django.core.management.base import BaseCommand

from annotate.roles import roles_setup


class Command(BaseCommand):
    help = (
        "Create the viewer, curator, staff and admin groups and give each its permissions "
        "(idempotent; run after migrate)."
    )

    def handle(self, *args, **options) -> None:
        counts = roles_setup()
        parts = ", ".join(f"{role} {n}" for role, n in counts.items())
        self.stdout.write(f"setup_roles: permissions per group: {parts}")
