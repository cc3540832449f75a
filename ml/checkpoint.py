"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, verified on load.

A model version is two files: ``<name>.safetensors`` (the weights, which hold no code) and
``<name>.json`` (backbone, architecture, training config, concepts, thresholds, metrics and the
sha256 of the weights file). Loading checks the sha256 before parsing anything, refuses on a
mismatch, and never unpickles: ``.pt`` weights are read with ``torch.load(weights_only=True)``
and nothing else.

Training state for resuming (model, optimizer, epoch...) is a separate ``.pt`` file written with
``torch.save`` and read back with ``weights_only=True``: it holds only tensors and plain values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch.nn as nn

# PyTorch and the model registry are imported inside the functions that need them, so that code
# which only hashes files or reads sidecars (the web process, every management command) does not
# pay for importing torch.

FORMAT = "crowdloop-checkpoint"
VERSION = 1
DEFAULT_NAME = "model"


class CheckpointError(ValueError):
    """A checkpoint is missing, tampered with, or not one crowdloop wrote."""


@dataclass(frozen=True)
class SavedCheckpoint:
    """Where a checkpoint went and the hash a model-version row should store."""

    weights_path: Path
    meta_path: Path
    sha256: str


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: the model (eval mode, CPU) and its sidecar."""

    model: nn.Module
    concepts: list[Any]
    thresholds: np.ndarray
    config: dict[str, Any]
    metrics: dict[str, Any]
    meta: dict[str, Any]
    sha256: str


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are fsynced, and the file is renamed
    over ``path`` (atomic on POSIX); the directory is fsynced so the rename survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for a directory, a ``.safetensors`` path or a ``.json`` path."""
    path = Path(path)
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    if path.suffix in (".safetensors", ".pt", ".pth"):
        return path, path.with_suffix(".json")
    return path / f"{DEFAULT_NAME}.safetensors", path / f"{DEFAULT_NAME}.json"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: Any,
    concepts: list[Any],
    thresholds: np.ndarray | list[float],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> SavedCheckpoint:
    """Save a model version: safetensors weights, then the JSON sidecar naming their sha256.

    The sidecar is written last, so a crash in between leaves no sidecar that points at a
    missing or partial weights file.

    Args:
        path: a directory (files ``model.safetensors`` and ``model.json`` in it) or a
            ``.safetensors`` path (sidecar next to it with ``.json``).
        model: a :class:`MultiLabelNet` or a bare :class:`Head`.
        config: the training config (a dataclass or dict), stored for reproducibility.
        concepts: the concepts, in output order (keys or dicts with key/label/uri).
        thresholds: (C,) per-concept decision thresholds.
        metrics: validation/test metrics to record.
        extra: anything else JSON-able (data lineage, dataset release id...).

    Returns:
        The paths and the weights' sha256.
    """
    from safetensors.torch import save

    from ml.models import Head, MultiLabelNet

    weights_path, meta_path = _paths(path)
    if weights_path.suffix != ".safetensors":
        raise CheckpointError("checkpoints are always written as safetensors")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if isinstance(model, MultiLabelNet):
        arch = {"kind": "model", "backbone": model.spec.name, **_jsonable(model.spec)}
        num_outputs = model.spec.num_concepts
    elif isinstance(model, Head):
        arch = {"kind": "head", "in_features": model.in_features, "num_concepts":
                model.num_concepts, "head": model.kind,
                "hidden": model.layers[1].out_features if model.kind == "mlp" else None,
                "dropout": model.layers[0].p}
        arch["backbone"] = None
        num_outputs = model.num_concepts
    else:
        raise CheckpointError(f"cannot checkpoint a {type(model).__name__}")
    if len(concepts) != num_outputs or thresholds.shape != (num_outputs,):
        raise CheckpointError(
            f"model has {num_outputs} outputs but got {len(concepts)} concepts and "
            f"{thresholds.shape} thresholds")

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": "pt"})
    atomic_write_bytes(weights_path, data)
    sha = hashlib.sha256(data).hexdigest()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "backbone": arch["backbone"],
        "architecture": arch,
        "weights_file": weights_path.name,
        "weights_sha256": sha,
        "config": _jsonable(config),
        "concepts": _jsonable(list(concepts)),
        "thresholds": _jsonable(thresholds),
        "metrics": _jsonable(metrics or {}),
        "extra": _jsonable(extra or {}),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
    return SavedCheckpoint(weights_path=weights_path, meta_path=meta_path, sha256=sha)


def load_checkpoint(path: str | Path, *, expected_sha256: str | None = None) -> LoadedCheckpoint:
    """Load a checkpoint after checking the weights' sha256.

    Args:
        path: the directory, the sidecar ``.json`` or the weights file.
        expected_sha256: the hash recorded elsewhere (the model-version row); when given, the
            file must match it as well as the sidecar.

    Raises:
        CheckpointError: missing files, a hash mismatch, weights that are not tensor-only, or
            weights that do not fit the recorded architecture.
    """
    weights_path, meta_path = _paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable checkpoint sidecar {meta_path}: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path.name} is not a crowdloop checkpoint (v{VERSION})")
    # The sidecar names its weights file; it must sit next to it (no path tricks).
    name = meta.get("weights_file", "")
    if Path(name).name != name or not name:
        raise CheckpointError(f"bad weights_file {name!r} in {meta_path.name}")
    weights_path = meta_path.parent / name
    if not weights_path.is_file():
        raise CheckpointError(f"weights file missing: {weights_path}")

    # Hash before parsing: a tampered file is never handed to a parser.
    sha = sha256_file(weights_path)
    if sha != meta.get("weights_sha256"):
        raise CheckpointError(f"sha256 mismatch for {weights_path.name}: the file was changed")
    if expected_sha256 is not None and sha != expected_sha256:
        raise CheckpointError(f"sha256 of {weights_path.name} is not the expected one")

    from ml.models import Head, create_model, load_state_dict_file

    try:
        state = load_state_dict_file(weights_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    arch = meta["architecture"]
    try:
        if arch["kind"] == "model":
            model: nn.Module = create_model(
                arch["name"], arch["num_concepts"], head=arch["head"], hidden=arch["hidden"],
                dropout=arch["dropout"], **arch.get("kwargs", {}))
        else:
            model = Head(arch["in_features"], arch["num_concepts"], kind=arch["head"],
                         hidden=arch["hidden"] or 256, dropout=arch["dropout"])
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"weights do not fit the recorded architecture: {exc}") from exc
    model.eval()
    return LoadedCheckpoint(
        model=model, concepts=meta["concepts"],
        thresholds=np.asarray(meta["thresholds"], dtype=np.float64), config=meta["config"],
        metrics=meta["metrics"], meta=meta, sha256=sha,
    )


def save_train_state(path: str | Path, state: dict[str, Any]) -> str:
    """Write a training state (from ``fit``'s ``on_checkpoint``) atomically; return its sha256."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_train_state(path: str | Path, *, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)``: tensors and plain values only.

    Raises:
        CheckpointError: missing, hash mismatch, or anything that is not tensor-only.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"sha256 of {path.name} is not the expected one")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: refused, never retried unsafely
        raise CheckpointError(f"refused to load {path.name}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != "crowdloop-train-state":
        raise CheckpointError(f"{path.name} is not a crowdloop training state")
    return state
