from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.models import Volunteer
from annotate.services.volunteers import (
    VolunteerExclusionError,
    volunteer_find,
    volunteers_exclude,
    volunteers_include,
)


class Command(BaseCommand):
    help = (
        "Exclude a volunteer from aggregation (their votes leave every label at the next full "
        "pass), or take them back with --undo. Recorded with the reason and the user given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("volunteer", help="The volunteer's key, or their Zooniverse user name.")
        parser.add_argument("--reason", required=True, help="Why; kept in the audit.")
        parser.add_argument(
            "--by", required=True, help="The user name of the person deciding (an account here)."
        )
        parser.add_argument("--undo", action="store_true", help="Take the volunteer back.")

    def handle(self, *args, volunteer: str, reason: str, by: str, undo: bool, **options) -> None:
        user = get_user_model().objects.filter(username=by).first()
        if user is None:
            raise CommandError(f"no user called {by!r}")
        try:
            found = volunteer_find(name=volunteer)
            change = volunteers_include if undo else volunteers_exclude
            changed = change(volunteers=[found], by=user, reason=reason)
        except (Volunteer.DoesNotExist, VolunteerExclusionError) as exc:
            raise CommandError(str(exc)) from exc
        if not changed:
            state = "not excluded: nothing to take back" if undo else "already excluded"
            self.stdout.write(f"volunteer_exclude {found.key}: {state}")
            return
        state = "taken back into" if undo else "excluded from"
        self.stdout.write(
            f"volunteer_exclude {found.key}: {state} aggregation; the next full aggregation "
            "rewrites the labels"
        )
