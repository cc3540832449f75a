"""A dataset export: the records of one kind in one format, with a manifest of hashes and lineage.

Contract: :func:`dataset_export` writes ``out`` (a file, or a folder for imagefolder) and its
manifest, or raises ``ValueError`` before any file opens; :func:`manifest_build` and
:func:`lineage_describe` are shared with the releases (``annotate.services.releases``). The
lineage's model version comes from the model side through :func:`lineage_model_register`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from annotate.models import AggregatedLabel, Item
from annotate.services.datasets.records import (
    SPLIT_RULE,
    SPLITS,
    ExportFilters,
    export_concepts,
    records_for,
)
from annotate.services.datasets.writers import (
    FORMATS,
    ExportResult,
    files_describe,
    records_write,
    writers_build,
)


def manifest_build(result: ExportResult, filters: ExportFilters, **extra: Any) -> dict[str, Any]:
    return {
        "generator": "crowdloop",
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **extra,
        "formats": result.formats,
        "filters": filters.as_dict(),
        "n_items": result.n_items,
        "counts": result.counts,
        "splits": result.split_counts,
        "sources": result.sources,
        "skipped_images": result.skipped_images,
        "split_rule": SPLIT_RULE,
        "files": [f.__dict__ for f in result.files],
    }


def dataset_export(
    *,
    fmt: str,
    out: Path | str,
    reviewed_only: bool = False,
    min_confidence: float | None = None,
    concepts: Sequence[str] | None = None,
    kind: str = "labels",
) -> ExportResult:
    """Export the final labels (or, with ``kind="proposals"``, the active model's enrichment
    proposals) in one format to ``out``, with a manifest beside it.

    ``out`` is a file for csv, jsonl and webannotation (the manifest is ``<out>.manifest.json``)
    and a folder for imagefolder (the manifest is ``<out>/manifest.json``). An export with no item
    still writes valid empty files and a manifest (B18).

    Raises:
        ValueError: an unknown format or concept, or a confidence outside [0.5, 1].
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    filters = ExportFilters(
        reviewed_only=reviewed_only,
        min_confidence=min_confidence,
        concepts=tuple(concepts) if concepts else None,
    )
    out = Path(out)
    vocabulary = export_concepts(filters)
    if fmt == "imagefolder":
        out.mkdir(parents=True, exist_ok=True)
        root, manifest_path = out, out / "manifest.json"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        root, manifest_path = out.parent, out.with_name(out.name + ".manifest.json")
    records = records_for(kind, filters, concepts=vocabulary)  # fails before any file opens
    writers = writers_build({fmt: out}, vocabulary)
    result = records_write(records, writers, ExportResult(formats=[fmt], out=out))
    if fmt == "imagefolder":
        result.files = files_describe(out, [out / s for s in SPLITS])
    else:
        result.files = files_describe(root, [out])
    manifest = manifest_build(result, filters, kind=kind, lineage=lineage_describe())
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    result.manifest_path = manifest_path
    return result


def lineage_describe() -> dict[str, Any]:
    """Where the labels came from: aggregation method(s), votes, curator decisions, model."""
    from annotate.models import Classification, Review

    methods = sorted(AggregatedLabel.objects.order_by().values_list("method", flat=True).distinct())
    return {
        "aggregation_methods": methods,
        "aggregation_method_setting": getattr(settings, "AGGREGATION_METHOD", ""),
        "n_classifications": Classification.objects.filter(is_duplicate=False).count(),
        # Decisions that stand: an undo and the decision it reversed count for nothing.
        "n_curator_decisions": Review.objects.exclude(
            action__in=[Review.Action.SKIP, Review.Action.UNDO]
        )
        .filter(undone_by__isnull=True)
        .count(),
        "n_items_curated": Item.objects.curated().count(),
        "n_items_rejected": Item.objects.filter(review_state=Item.ReviewState.REJECTED).count(),
        "model_version": active_model_version(),
    }


#: Describes the model side's active version for a lineage ({id, name, weights, weights_sha256}),
#: or None. The training app sets it when it loads (``TrainingConfig.ready``); annotate alone has
#: no model, and never imports training.
ModelDescriber = Callable[[], dict[str, Any] | None]
_MODEL_DESCRIBERS: list[ModelDescriber] = []


def lineage_model_register(describe: ModelDescriber) -> None:
    """Let the model side say which model version a lineage names (the last one set wins)."""
    _MODEL_DESCRIBERS[:] = [describe]


def active_model_version() -> dict[str, Any] | None:
    """The model side's active version as described by the registered describer, else None."""
    return _MODEL_DESCRIBERS[-1]() if _MODEL_DESCRIBERS else None
