"""Conditions that select rows by a long list of ids, in as few statements as the
database allows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import BooleanField, Model
from django.db.models.expressions import RawSQL

# Ids per IN list where a backend has neither SQLite's json_each nor PostgreSQL's arrays.
_IN_CHUNK = 500


def id_conditions(model: type[Model], column: str, ids: np.ndarray) -> Iterator[tuple[str, list]]:
    """SQL conditions ``table.column IN ids``, as ``(sql, params)``, that together cover ``ids``.

    SQLite caps a statement's parameters (999 in Django's eyes) and binding thousands of values
    one by one costs more than the query, so the ids travel as ONE parameter: a JSON array read
    by ``json_each`` on SQLite, an array compared with ``= ANY`` on PostgreSQL. Other backends get
    IN lists of ``_IN_CHUNK`` ids. The column is qualified with its table, so the condition
    stays unambiguous in a query that joins another table with a column of the same name.
    """
    q = connection.ops.quote_name
    name = f"{q(model._meta.db_table)}.{q(column)}"
    values = [int(v) for v in ids]
    if connection.vendor == "sqlite":
        yield f"{name} IN (SELECT value FROM json_each(%s))", [json.dumps(values)]
    elif connection.vendor == "postgresql":
        yield f"{name} = ANY(%s)", [values]
    else:
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            yield f"{name} IN ({', '.join(['%s'] * len(chunk))})", chunk


def _id_filters(model: type[Model], column: str, ids: np.ndarray) -> Iterator[RawSQL]:
    """``id_conditions`` as expressions for ``QuerySet.filter``."""
    for sql, params in id_conditions(model, column, ids):
        yield RawSQL(sql, params, output_field=BooleanField())


def queries_scoped(
    query: Any, model: type[Model], column: str, scope: np.ndarray | None
) -> list[Any]:
    """``query`` itself (no scope), or one query per id condition that covers ``scope``."""
    if scope is None:
        return [query]
    return [query.filter(f) for f in _id_filters(model, column, scope)]
