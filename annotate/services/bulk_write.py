"""Set-based writes of many computed rows: stage them in a temporary table, then one statement.

``bulk_create(update_conflicts=True)`` and ``bulk_update`` send a statement per batch of a few
thousand rows and rewrite every row, changed or not: writing 2,000,000 aggregated labels that way
was most of an aggregation (bench/README.md, "Load: PostgreSQL at 100k items / 1M votes"). Here
the rows go into a temporary table in one stream (``COPY`` on PostgreSQL, ``executemany`` on
SQLite), and a single ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (or ``UPDATE ... FROM``)
writes only the rows whose values changed, so a re-run on the same votes touches almost nothing.

Both databases run the same SQL: SQLite (3.33 and later) has upserts and ``UPDATE ... FROM``.
Call these inside a transaction; the staging table is dropped before they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from django.db import connection
from django.db.models import Model

# A column of values: a sequence, or a 1-D numpy array (written with its tolist()).
Column = Sequence[Any] | np.ndarray

_COPY_CHUNK = 50_000


def rows_upsert(
    *,
    model: type[Model],
    keys: Sequence[str],
    columns: Mapping[str, Column],
    constants: Mapping[str, Any] | None = None,
    touch: Mapping[str, Any] | None = None,
) -> int:
    """Insert new rows and update changed ones, keyed by a unique constraint on ``keys``.

    Args:
        model: the table to write.
        keys: attnames of the unique constraint the rows are matched on (``["item_id", ...]``).
        columns: attname to one value per row; must include ``keys``.
        constants: attname to one value for every row, compared like the columns.
        touch: attname to one value for every row written (``updated_at``), never compared:
            an unchanged row keeps its old value.

    Returns:
        The number of rows inserted or updated (unchanged rows are not counted).
    """
    constants = dict(constants or {})
    touch = dict(touch or {})
    assert set(keys) <= set(columns), "every key must be one of the staged columns"
    table = connection.ops.quote_name(model._meta.db_table)
    q = connection.ops.quote_name
    col = _columns(model)
    staged = list(columns)
    compared = [name for name in [*staged, *constants] if name not in keys]
    assert compared, "an upsert needs at least one value column besides the keys"
    with connection.cursor() as cursor:
        stage = _stage(cursor, model, columns)
        targets = [*staged, *constants, *touch]
        sources = [f"s.{q(name)}" for name in staged] + ["%s"] * (len(constants) + len(touch))
        # "WHERE 1 = 1": SQLite cannot tell an upsert's ON from a join's ON without it.
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(col[n] for n in targets)}) "
            f"SELECT {', '.join(sources)} FROM {stage} s WHERE 1 = 1 "
            f"ON CONFLICT ({', '.join(col[n] for n in keys)}) DO UPDATE SET "
            + ", ".join(f"{col[n]} = EXCLUDED.{col[n]}" for n in [*compared, *touch])
            + " WHERE "
            + " OR ".join(f"{table}.{col[n]} <> EXCLUDED.{col[n]}" for n in compared),
            [*constants.values(), *touch.values()],
        )
        written = cursor.rowcount
        cursor.execute(f"DROP TABLE {stage}")
    return written


def rows_update(*, model: type[Model], columns: Mapping[str, Column]) -> int:
    """Set ``columns`` on the rows whose primary keys are given among them, where they differ.

    ``columns`` must include the primary key's attname (``id``). Returns the rows changed.
    """
    pk = model._meta.pk.attname
    assert pk in columns, f"columns must include the primary key {pk!r}"
    values = [name for name in columns if name != pk]
    table = connection.ops.quote_name(model._meta.db_table)
    q = connection.ops.quote_name
    col = _columns(model)
    with connection.cursor() as cursor:
        stage = _stage(cursor, model, columns)
        # PostgreSQL wants the bare column on the left of SET; SQLite accepts it too.
        cursor.execute(
            f"UPDATE {table} SET "
            + ", ".join(f"{col[n]} = s.{q(n)}" for n in values)
            + f" FROM {stage} s WHERE {table}.{col[pk]} = s.{q(pk)} AND ("
            + " OR ".join(f"{table}.{col[n]} <> s.{q(n)}" for n in values)
            + ")"
        )
        changed = cursor.rowcount
        cursor.execute(f"DROP TABLE {stage}")
    return changed


def _columns(model: type[Model]) -> dict[str, str]:
    """attname to quoted column name (a concrete field's column is always set)."""
    return {
        f.attname: connection.ops.quote_name(cast(str, f.column))
        for f in model._meta.concrete_fields
    }


def _stage(cursor: Any, model: type[Model], columns: Mapping[str, Column]) -> str:
    """A temporary table shaped like ``model``'s ``columns``, filled with their values."""
    q = connection.ops.quote_name
    stage = q(f"stage_{model._meta.db_table}")
    names = list(columns)
    by_attname = {f.attname: cast(str, f.column) for f in model._meta.concrete_fields}
    unknown = set(names) - set(by_attname)
    assert not unknown, f"no such columns on {model.__name__}: {sorted(unknown)}"
    picked = ", ".join(f"{q(by_attname[n])} AS {q(n)}" for n in names)
    cursor.execute(f"DROP TABLE IF EXISTS {stage}")
    # Same column types as the target, without copying its constraints or rows.
    cursor.execute(
        f"CREATE TEMPORARY TABLE {stage} AS SELECT {picked} "
        f"FROM {q(model._meta.db_table)} WHERE 1 = 0"
    )
    values = [_as_list(columns[n]) for n in names]
    if connection.vendor == "postgresql":
        _copy(cursor, stage, names, values)
        cursor.execute(f"ANALYZE {stage}")  # a planner that knows the size joins it sensibly
    else:
        placeholders = ", ".join(["%s"] * len(names))
        cursor.executemany(
            f"INSERT INTO {stage} VALUES ({placeholders})", zip(*values, strict=True)
        )
    return stage


def _as_list(values: Column) -> list[Any]:
    """Plain Python values: numpy scalars would print as ``np.float64(0.5)``."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _copy(cursor: Any, stage: str, names: list[str], values: list[list[Any]]) -> None:
    """Stream the columns into ``stage`` with COPY in text format, a chunk of rows at a time.

    Each column is formatted as a whole (``str`` for integers, ``repr`` for floats, the shortest
    text that reads back to the same double), which keeps this to a few seconds for millions of
    rows.
    """
    q = connection.ops.quote_name
    n_rows = len(values[0]) if values else 0
    with cursor.cursor.copy(f"COPY {stage} ({', '.join(q(n) for n in names)}) FROM STDIN") as copy:
        for start in range(0, n_rows, _COPY_CHUNK):
            texts = [_copy_texts(column[start : start + _COPY_CHUNK]) for column in values]
            copy.write("\n".join(map("\t".join, zip(*texts, strict=True))) + "\n")


def _copy_texts(column: list[Any]) -> list[str]:
    """One column as fields of COPY's text format."""
    kinds = {type(value) for value in column}
    if kinds <= {int}:
        return list(map(str, column))
    if kinds <= {float, int}:
        return list(map(repr, map(float, column)))
    return [_copy_text(value) for value in column]


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
