"""Verified models of recent versions, kept per process: scoring chunks and map views share them.

A module of its own, apart from the scoring service, because importing that one imports
torchvision (through the embedding pipeline), which a web process drawing its first Grad-CAM map
should not pay for (bench/README.md, "Grad-CAM maps on the item page"). Loading here needs
PyTorch and safetensors only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from django.conf import settings

from ml.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from training.models import ModelVersion

#: Versions kept loaded in one process: the active one and the one before it (or a candidate).
KEEP = 2

T = TypeVar("T")


class VersionCache(Generic[T]):
    """Models of the ``keep`` most recently used versions, keyed by version and checkpoint sha256.

    Web workers serve a page's maps from several threads at once: one of them loads, the rest wait
    for it instead of each reading and verifying the same checkpoint. A load that raises keeps
    nothing, so the next call tries again.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._models: OrderedDict[tuple[int, str], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: ModelVersion, load: Callable[[ModelVersion], T]) -> T:
        key = (version.pk, version.checkpoint_sha256)
        with self._lock:
            if key not in self._models:
                self._models[key] = load(version)
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            self._models.move_to_end(key)
            return self._models[key]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """The (version id, checkpoint sha256) keys loaded now, least recently used first."""
        with self._lock:
            return iter(list(self._models))

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


_MODELS: VersionCache[LoadedCheckpoint] = VersionCache(KEEP)


def checkpoint_file(version: ModelVersion) -> Path:
    """The sidecar path of a version, refusing anything outside ARTIFACT_ROOT."""
    root = Path(settings.ARTIFACT_ROOT).resolve()
    path = (root / version.checkpoint_path).resolve()
    if not path.is_relative_to(root):
        raise CheckpointError(f"checkpoint path leaves ARTIFACT_ROOT: {version.checkpoint_path}")
    return path


def model_version_load(version: ModelVersion) -> LoadedCheckpoint:
    """The version's model, after its weights hash to the sha256 recorded on the row.

    Raises:
        ml.checkpoint.CheckpointError: missing or changed files.
    """
    return load_checkpoint(checkpoint_file(version), expected_sha256=version.checkpoint_sha256)


def model_version_loaded(version: ModelVersion) -> LoadedCheckpoint:
    """The version's verified model, loaded once per process and kept for the next callers.

    Keyed by the version and its checkpoint's sha256; the least recently used of more than
    :data:`KEEP` versions is dropped. The model is in eval mode; callers must not train it.

    Raises:
        ml.checkpoint.CheckpointError: the checkpoint is missing or does not verify (nothing is
            kept, so the next call tries again).
    """
    return _MODELS.get(version, model_version_load)


def model_cache_clear() -> None:
    """Forget every loaded model (tests, and a benchmark's cold start)."""
    _MODELS.clear()
