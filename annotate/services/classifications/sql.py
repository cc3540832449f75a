"""The SQL the steps share: ``IN`` filters bound as one parameter, bulk inserts (``COPY`` on
PostgreSQL), and values adapted the way the backend stores them."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import UTC
from typing import Any, cast

import numpy as np
import orjson
from django.db import connections, router
from django.db.models import BooleanField, Model, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from annotate.models import Classification

# SQLite allows 999 parameters per statement in Django's eyes; Postgres accepts more. One INSERT
# per thousand rows keeps statements small on both without a round trip per row.
INSERT_BATCH = 1000


def among(column: str, values: Collection[int | str], *, indexed: bool = True) -> Any:
    """A filter ``column IN values`` that binds the values as ONE parameter.

    Django's ``__in`` prepares and binds every value on its own, which cost more than the
    queries themselves at 5,000 values a batch; a JSON array (SQLite ``json_each``) or an array
    (PostgreSQL ``= ANY``) is one parameter whatever its length. ``column`` is always a
    constant of the ingest's modules, never input; ``table.column`` names a column of a query
    that joins another table. ``indexed=False`` writes ``+column``, which keeps the planner from
    choosing that column's index over a more selective one.
    """
    vendor = connections[router.db_for_read(Classification)].vendor
    values = list(values)
    quoted = ".".join(f'"{part}"' for part in column.split("."))
    name = quoted if indexed else f"+{quoted}"
    param: str | list[int | str]
    if vendor == "sqlite":
        sql, param = f"{name} IN (SELECT value FROM json_each(%s))", json.dumps(values)
    elif vendor == "postgresql":
        sql, param = f"{name} = ANY(%s)", values
    else:
        return Q(**{f"{column.rpartition('.')[2]}__in": values})
    return RawSQL(sql, (param,), output_field=BooleanField())


def pairs_among(pairs: Collection[tuple[int, int]]) -> Any:
    """A filter ``(volunteer_id, subject_id) IN pairs``, the pairs bound as ONE parameter.

    It is not indexable (a string built from two columns), so it only narrows the rows another,
    indexed condition finds: far fewer rows come back than with two independent IN lists, whose
    cross product matches every vote of every volunteer of the batch on every subject of it.
    """
    vendor = connections[router.db_for_read(Classification)].vendor
    keys = [f"{volunteer}:{subject}" for volunteer, subject in pairs]
    if vendor == "sqlite":
        sql = """("volunteer_id" || ':' || "subject_id") IN (SELECT value FROM json_each(%s))"""
        return RawSQL(sql, (json.dumps(keys),), output_field=BooleanField())
    if vendor == "postgresql":
        sql = """("volunteer_id"::text || ':' || "subject_id"::text) = ANY(%s)"""
        return RawSQL(sql, (keys,), output_field=BooleanField())
    return Q(volunteer_id__in={volunteer for volunteer, _ in pairs})  # a superset: still correct


def json_adapter(connection: Any) -> Callable[[Any], Any]:
    """JSONField values as JSON text made by ``orjson`` (same values, no spaces).

    SQLite stores the text; PostgreSQL casts it to ``jsonb`` (``COPY`` text and untyped
    parameters), where Django's ``Jsonb`` wrapper would be serialised again on every row it
    appears in: two million ``json.dumps`` calls for the answer lists of a million votes.
    """
    if connection.vendor in ("sqlite", "postgresql"):
        dumps, option = orjson.dumps, orjson.OPT_NON_STR_KEYS

        def adapt(value: Any) -> str:
            return dumps(value, option=option).decode()

        return adapt
    adapt_json = connection.ops.adapt_json_value
    return lambda value: adapt_json(value, None)


def times_adapted(values: np.ndarray, connection: Any) -> list[Any]:
    """Naive-UTC ``datetime64[us]`` values as the backend stores them, without a loop per row.

    SQLite keeps ``str(datetime)`` text ("2024-02-01 00:00:00", with ".ffffff" only when there
    are microseconds); PostgreSQL takes the same text with an offset. Other backends get their
    own adapter, value by value.
    """
    if not len(values):
        return []
    utc_sqlite = connection.vendor == "sqlite" and str(connection.timezone) == "UTC"
    if utc_sqlite or connection.vendor == "postgresql":
        text = np.datetime_as_string(values, unit="us")  # 2024-02-01T00:00:00.000000
        text.view(np.uint32).reshape(len(text), -1)[:, 10] = ord(" ")
        whole = values.astype(np.int64) % 1_000_000 == 0
        out = text.astype(object)
        out[whole] = text[whole].astype("U19").astype(object)
        if connection.vendor == "postgresql":
            out = out + "+00:00"
        return out.tolist()
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(v.replace(tzinfo=UTC)) for v in values.astype(object).tolist()]


#: From this many rows a PostgreSQL insert goes through COPY.
_COPY_FROM = 1_000


def rows_insert(model: type[Model], filled: Sequence[str], values: list[tuple]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of rows of ``model``, one prepared statement a batch.

    ``values`` hold, per row, the ``filled`` columns (attribute names) already adapted for the
    database; every other column gets its field default (``now`` for ``auto_now_add``).
    ``bulk_create`` spent most of the import compiling SQL per field and per row (and splits
    inserts at 999 parameters on SQLite). Conflicts on a unique key are ignored, as
    ``ignore_conflicts`` would. SQLite runs one ``executemany``; PostgreSQL streams a large batch
    into a temporary table with ``COPY`` and moves it with one ``INSERT ... SELECT`` (a page of a
    sync is too small to be worth the four extra statements).
    """
    if not values:
        return
    connection = connections[router.db_for_write(model)]
    ops = connection.ops
    fields = {f.attname: f for f in model._meta.concrete_fields if not f.primary_key}
    now = timezone.now()
    others = [f for name, f in fields.items() if name not in filled]
    constants = tuple(
        f.get_db_prep_save(
            now
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
            else f.get_default(),
            connection,
        )
        for f in others
    )
    # Concrete fields all have a column.
    columns = cast(list[str], [fields[name].column for name in filled] + [f.column for f in others])
    if constants:
        values = [row + constants for row in values]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(values) >= _COPY_FROM:
            _copy_then_insert(cursor, ops, model, columns, values)
        else:
            cursor.executemany(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING".format(
                    ops.quote_name(model._meta.db_table),
                    ", ".join(ops.quote_name(c) for c in columns),
                    ", ".join(["%s"] * len(columns)),
                ),
                values,
            )


def _copy_then_insert(
    cursor: Any, ops: Any, model: type[Model], columns: list[str], values: list[tuple]
) -> None:
    """PostgreSQL: the batch streams into a temporary table with ``COPY`` (one round trip, no
    per-row statement), then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` moves it."""
    table = ops.quote_name(model._meta.db_table)
    stage = ops.quote_name(f"stage_{model._meta.db_table}")
    names = ", ".join(ops.quote_name(c) for c in columns)
    cursor.execute(f"DROP TABLE IF EXISTS {stage}")
    # Same column types as the target. (``bulk_write`` stages columns as COPY text; these rows
    # hold the backend's own adapted values, JSON wrappers among them, which ``write_row`` takes.)
    cursor.execute(f"CREATE TEMPORARY TABLE {stage} AS SELECT {names} FROM {table} WHERE 1 = 0")
    with cursor.cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        write_row = copy.write_row
        for row in values:
            write_row(row)
    cursor.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING"
    )
    cursor.execute(f"DROP TABLE {stage}")
