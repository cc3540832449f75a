"""What a subject truly shows, for the simulated crowd: truth functions, entries and sizes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .tasks import AnswerIndex

# A truth function gives a subject's answers: labels or keys, or ``{label or key: size}``.
TruthFn = Callable[[int, dict[str, Any]], Iterable[str] | Mapping[str, float | None]]
# What callers may pass as ``truth``: a function, or ``{external_id: [labels or keys]}`` (an
# entry may also be ``{label or key: size}``).
Truth = TruthFn | Mapping[str, Iterable[str] | str | Mapping[str, float | None]]


def _truth_from_metadata(
    subject_id: int, metadata: dict[str, Any]
) -> list[str] | dict[str, float | None]:
    value = metadata.get("#truth", [])
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[;,]", value) if part.strip()]
    if isinstance(value, dict):
        try:
            return _truth_entries(value)
        except ValueError:
            return [str(k) for k in value]  # sizes that are no numbers: the labels alone
    return [str(v) for v in value] if isinstance(value, list) else []


def _truth_entries(value: Any) -> list[str] | dict[str, float | None]:
    """A truth entry as given: labels or keys (a list, or one string split at ``;`` or ``,``),
    or ``{label or key: size}`` with each object's size (a share of the image side, or null)."""
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[;,]", value) if part.strip()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, Mapping):
        sizes: dict[str, float | None] = {}
        for label, size in value.items():
            if size is not None and (
                isinstance(size, bool)
                or not isinstance(size, int | float)
                or not math.isfinite(size)
                or size < 0
            ):
                raise ValueError(
                    f"the size of {label!r} must be a number >= 0 (a share of the image side) "
                    f"or null, got {size!r}"
                )
            sizes[str(label)] = None if size is None else float(size)
        return sizes
    raise ValueError(
        f"truth entries must be a list of labels or keys, or {{label: size}}, got {value!r}"
    )


def truth_sizes(entries: Iterable[str], index: AnswerIndex) -> dict[int, float | None]:
    """Answer index -> size of its object (None: not given) for what a truth function gives:
    labels or keys, or ``{label or key: size}``. Unknown labels are left out."""
    sizes: dict[int, float | None] = {}
    given = entries.items() if isinstance(entries, Mapping) else ((e, None) for e in entries)
    for label, size in given:
        i = index.lookup.get(str(label).lower())
        if i is None:
            continue
        if size is not None and (sizes.get(i) is None or size > sizes[i]):
            sizes[i] = float(size)  # the same answer twice (label and key): the bigger object
        else:
            sizes.setdefault(i, None)
    return sizes


def truth_function(truth: Truth | None) -> TruthFn:
    """A truth function from what callers pass: None, a function, or an external-id mapping.

    A mapping is read through ``metadata["external_id"]``; a subject whose external id it does
    not list falls back to ``metadata["#truth"]``.
    """
    if truth is None:
        return _truth_from_metadata
    if isinstance(truth, Mapping):
        table = {str(k): _truth_entries(v) for k, v in truth.items()}

        def from_external_id(
            subject_id: int, metadata: dict[str, Any]
        ) -> list[str] | dict[str, float | None]:
            external_id = metadata.get("external_id")
            if external_id is not None and str(external_id) in table:
                return table[str(external_id)]
            return _truth_from_metadata(subject_id, metadata)

        return from_external_id
    if callable(truth):
        return truth
    raise TypeError(f"truth must be None, a function or a mapping, not {type(truth).__name__}")


def truth_indices(entries: Iterable[str], index: AnswerIndex) -> set[int]:
    return {index.lookup[e.lower()] for e in entries if e.lower() in index.lookup}
