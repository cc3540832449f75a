"""Logged-out volunteers are keyed by their browser session in exports too (B7).

The API's logged-out volunteers were always ``anon:not-logged-in-<session>``; an export's were
``anon:not-logged-in-<hashed ip>``, so one person was two volunteers. Votes stored from exports
that carry a session move to their session's volunteer (made when missing, named as before);
their old volunteer keeps the votes without a session and stays, with its history (skills are
recomputed by the next aggregation, counts here). The votes of a volunteer excluded from the
aggregation stay with it (the exclusion is an audited staff decision). Nothing is deleted.
"""

from django.db import migrations
from django.db.models import Count


def session_key(session: str) -> str:
    return f"anon:not-logged-in-{session[:64]}"


def rekey(apps, schema_editor):
    Classification = apps.get_model("annotate", "Classification")
    Volunteer = apps.get_model("annotate", "Volunteer")
    votes = (
        # An excluded volunteer's votes stay with it: its exclusion is a staff decision, audited.
        Classification.objects.filter(volunteer__logged_in=False, volunteer__excluded=False)
        .exclude(session="")
        .values_list("id", "session", "volunteer_id", "volunteer__key", "volunteer__user_name")
    )
    moves: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    touched: set[int] = set()
    for pk, session, volunteer_id, key, user_name in votes.iterator(chunk_size=5000):
        wanted = session_key(session)
        if key != wanted:
            moves.setdefault(wanted, []).append(pk)
            names.setdefault(wanted, user_name)
            touched.add(volunteer_id)
    for key, pks in moves.items():
        volunteer, _ = Volunteer.objects.get_or_create(
            key=key, defaults={"user_name": names[key], "logged_in": False}
        )
        touched.add(volunteer.pk)
        for start in range(0, len(pks), 5000):
            Classification.objects.filter(pk__in=pks[start : start + 5000]).update(
                volunteer_id=volunteer.pk
            )
    counted = dict(
        Volunteer.objects.filter(pk__in=touched)
        .annotate(n=Count("classifications"))
        .values_list("pk", "n")
    )
    for pk, n in counted.items():
        Volunteer.objects.filter(pk=pk).update(n_classifications=n)


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0013_quarantine_dedup"),
    ]

    operations = [migrations.RunPython(rekey, migrations.RunPython.noop, elidable=True)]
