"""JSON from strangers: bounded nesting and only finite numbers.

``json.loads`` recurses once per bracket, so one line of 100,000 ``[`` raises RecursionError
(not a ValueError) and takes a whole import down with it; it also accepts ``NaN`` and
``Infinity`` and turns ``1e309`` into ``inf``, which no database JSON column stores. orjson stops
at a fixed depth and refuses all three, as a ValueError. When it refuses a number, the text is
parsed once more to say where the number is.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

#: orjson's own limit on nested arrays and objects.
MAX_DEPTH = 1024


class JSONValueError(ValueError):
    """Text that is not JSON crowdloop keeps. ``path`` locates a bad number (``a.b[1]``)."""

    def __init__(self, reason: str, *, path: str = "") -> None:
        super().__init__(reason)
        self.path = path


class _NonFinite:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def loads(text: str | bytes) -> Any:
    """Decode JSON with at most ``MAX_DEPTH`` levels of nesting and only finite numbers.

    Raises:
        JSONValueError: a ValueError whose message says what is wrong (and where a number is).
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise JSONValueError(f"nested more than {MAX_DEPTH} levels deep") from None
        found = _non_finite(text)
        if found is not None:
            path, token = found
            where = f"'{path}' is" if path else "the value is"
            raise JSONValueError(f"{where} not a finite number: {token}", path=path) from None
        raise JSONValueError(f"invalid JSON: {exc}") from None


def unstorable(value: Any) -> tuple[str, str] | None:
    """Where ``value`` holds what a database JSON column refuses, and what, or None.

    That is a float that is inf or nan, or a NUL character in a string or a key (PostgreSQL
    stores neither); the path writes a NUL as ``\\x00``.
    """
    found = _first(value, _unstorable_leaf)
    return (found[0], _unstorable_leaf(found[1]) or "") if found else None


def _unstorable_leaf(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if isinstance(value, str) and "\x00" in value:
        return "contains a NUL character"
    return None


def _non_finite(text: str | bytes) -> tuple[str, str] | None:
    """Where the number orjson refused is: the path and the number as written."""

    def finite_or_marked(token: str) -> Any:
        number = float(token)
        return number if math.isfinite(number) else _NonFinite(token)

    try:
        value = json.loads(
            text,
            parse_constant=_NonFinite,
            parse_float=finite_or_marked,
            parse_int=finite_or_marked,
        )
    except (ValueError, RecursionError):
        return None
    found = _first(value, lambda v: isinstance(v, _NonFinite))
    return (found[0], found[1].text) if found else None


def _first(value: Any, bad: Any) -> tuple[str, Any] | None:
    """Depth first, without recursion: the path and value of the first ``bad`` key or leaf."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            children = []
            for k, v in node.items():
                name = str(k).replace("\x00", "\\x00")
                child = f"{path}.{name}" if path else name
                if bad(k):
                    return child, k
                children.append((child, v))
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        else:
            if bad(node):
                return path, node
            continue
        stack.extend(reversed(children))
    return None
