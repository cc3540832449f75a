"""Quarantined rows get a fingerprint, unique, so that re-running an import stores none twice.

Rows stored before are fingerprinted too, the first of each fingerprint only: copies that earlier
re-runs added keep no fingerprint and stay as they were (nothing is deleted), and the next run of
the same input stores nothing new. The hash is ``annotate.services.quarantine``'s, frozen here.
"""

import hashlib
import json

from django.db import migrations, models


def _fingerprint(kind, source, line, record_id, field, reason, raw):
    text = json.dumps([kind, source, line, record_id, field, reason, raw], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint_stored_rows(apps, schema_editor):
    QuarantinedRow = apps.get_model("annotate", "QuarantinedRow")
    seen: set[str] = set()
    batch = []
    rows = QuarantinedRow.objects.order_by("id").values_list(
        "id", "report__kind", "report__source", "line", "record_id", "field", "reason", "raw"
    )
    for pk, *values in rows.iterator(chunk_size=2000):
        key = _fingerprint(*values)
        if key in seen:
            continue
        seen.add(key)
        batch.append(QuarantinedRow(id=pk, fingerprint=key))
        if len(batch) >= 2000:
            QuarantinedRow.objects.bulk_update(batch, ["fingerprint"])
            batch = []
    QuarantinedRow.objects.bulk_update(batch, ["fingerprint"])


class Migration(migrations.Migration):
    # The fingerprints are written in a transaction of their own, before the constraint: on
    # PostgreSQL a table with pending trigger events (the rows just updated) cannot be altered.
    atomic = False

    dependencies = [
        ("annotate", "0012_item_identity_change"),
    ]

    operations = [
        migrations.AddField(
            model_name="quarantinedrow",
            name="fingerprint",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(fingerprint_stored_rows, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="quarantinedrow",
            constraint=models.UniqueConstraint(
                fields=("fingerprint",), name="quarantined_row_once"
            ),
        ),
    ]
