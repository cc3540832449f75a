"""Grad-CAM maps of a model version for the review screens, cached on disk per version.

An item's first view runs the model once and keeps every concept's small map; each PNG (overlay
or bare map, at one display size) is drawn from those and kept too. Under
``ARTIFACT_ROOT/explain``::

    v<version>/<item>-<image key>/cams.npz                   every concept's (h, w) map + image size
    v<version>/<item>-<image key>/<concept>-<size>.png       the map blended over the image
    v<version>/<item>-<image key>/<concept>-<size>-map.png   the bare map (transparent)

The version and the image's sha256 are in the path, so a new model or a re-imported picture never
shows an old map. Files are renamed into place, whole; the folders of versions neither active nor
among the newest :data:`KEEP_VERSIONS` go when a version writes its first map.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from django.conf import settings
from PIL.Image import Image

from annotate.models import Item
from annotate.services.media import image_path
from training.models import ModelVersion
from training.selectors import model_version_active

if TYPE_CHECKING:
    from ml.models import MultiLabelNet

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 512
MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 1024, 32
LAYERS = ("overlay", "map")
#: Besides the active versions, the newest versions whose maps stay on disk.
KEEP_VERSIONS = 3

_VERSION_DIR = re.compile(r"^v(\d+)$")
# One model run at a time per process: a page asks for several maps of one item at once, and
# the threads that wait find the maps the first one computed.
_COMPUTE = threading.Lock()


class MapUnavailable(LookupError):
    """No map can be drawn for this request; the message says why, in a short sentence."""


def explain_size(requested: int) -> int:
    """The size a map is drawn at: within 64..1024 px, rounded up to a multiple of 32.

    Rounding keeps the cache to 31 files per map and layer whatever sizes pages ask for; rounding
    *up* means the browser only ever scales a map down.
    """
    rounded = -(-int(requested) // SIZE_STEP) * SIZE_STEP
    return min(MAX_SIZE, max(MIN_SIZE, rounded))


def explain_root() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "explain"


@dataclass(frozen=True)
class MapRequest:
    """One map: which version, item image, concept, size and layer; where it is cached."""

    version: ModelVersion
    item_id: int
    image_file: str
    image_key: str
    concept: str
    size: int
    layer: str

    @property
    def concept_index(self) -> int:
        return self.version.concepts.index(self.concept)

    @property
    def folder(self) -> Path:
        return explain_root() / f"v{self.version.pk}" / f"{self.item_id}-{self.image_key}"

    @property
    def path(self) -> Path:
        suffix = "-map" if self.layer == "map" else ""
        return self.folder / f"{self.concept}-{self.size}{suffix}.png"

    @property
    def etag(self) -> str:
        """A strong ETag: the same for the same version, image, concept, size and layer."""
        return (
            f'"v{self.version.pk}.{self.version.checkpoint_sha256[:8]}.{self.image_key}.'
            f'{self.concept}.{self.size}.{self.layer}"'
        )


def explain_map_request(
    *,
    item: Item,
    concept_key: str,
    size: int = DEFAULT_SIZE,
    layer: str = "overlay",
    version: ModelVersion | None = None,
) -> MapRequest:
    """Check that a map can be drawn and say where it lives; nothing is read or computed.

    Args:
        size: the longest side wanted, in pixels (see :func:`explain_size`).
        layer: ``"overlay"`` (blended over the image) or ``"map"`` (the bare map, 45% opaque).
        version: default the active version.

    Raises:
        MapUnavailable: the item has no usable image, no version is active, or the version does
            not predict the concept.
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, not {layer!r}")
    if item.image_state != Item.ImageState.OK or not item.image_file:
        raise MapUnavailable(f"item {item.pk} has no usable image")
    version = version or model_version_active()
    if version is None:
        raise MapUnavailable("there is no active model version")
    if concept_key not in version.concepts:
        raise MapUnavailable(f"model v{version.pk} does not predict {concept_key!r}")
    # Stored images are named by their content; the hash covers items whose sha256 is unknown.
    key = item.image_sha256 or hashlib.sha256(item.image_file.encode()).hexdigest()
    return MapRequest(
        version=version,
        item_id=item.pk,
        image_file=item.image_file,
        image_key=key[:12],
        concept=concept_key,
        size=explain_size(size),
        layer=layer,
    )


def explain_map_png(request: MapRequest) -> bytes:
    """The map's PNG bytes: read from the cache, or drawn and cached.

    Raises:
        ml.images.ImageError: the item's image file is missing or refused.
        ml.checkpoint.CheckpointError: the version's checkpoint does not verify.
    """
    try:
        return request.path.read_bytes()
    except FileNotFoundError:
        pass
    from ml.explain import display_size, render_png  # PyTorch only when a map is drawn

    new_version = not request.folder.parent.exists()
    cams, (width, height), image = _cams(request)
    if request.layer == "overlay" and image is None:
        image = _image(request)
    png = render_png(
        cams[request.concept_index],
        image=image if request.layer == "overlay" else None,
        size=display_size(width, height, request.size),
    )
    _write_atomic(request.path, png)
    if new_version:
        explain_cache_prune(also=(request.version.pk,))
    return png


def _image(request: MapRequest) -> Image:
    from ml.images import load_image

    return load_image(
        image_path(request.image_file),
        max_pixels=settings.IMAGE_MAX_PIXELS,
        max_bytes=settings.IMAGE_MAX_BYTES,
    )


def _read_cams(path: Path, n_concepts: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    try:
        with np.load(path) as stored:
            cams, size = stored["cams"], stored["image_size"]
    except (OSError, ValueError, KeyError):  # absent, or cut short by a crash
        return None
    if cams.ndim != 3 or cams.shape[0] != n_concepts or size.shape != (2,):
        return None
    return cams.astype(np.float32), (int(size[0]), int(size[1]))


def _cams(request: MapRequest) -> tuple[np.ndarray, tuple[int, int], Image | None]:
    """Every concept's small map of the item, the image's (width, height), and the decoded
    image when it had to be decoded for the model."""
    path = request.folder / "cams.npz"
    n = len(request.version.concepts)
    found = _read_cams(path, n)
    if found is not None:
        return (*found, None)
    with _COMPUTE:
        found = _read_cams(path, n)  # another thread may have computed them meanwhile
        if found is not None:
            return (*found, None)
        image = _image(request)
        # Stored as float16; the maps drawn now use the same values as those drawn later.
        cams = explain_cams_compute(version=request.version, image=image).astype(np.float16)
        buffer = io.BytesIO()
        np.savez(buffer, cams=cams, image_size=np.array(image.size))
        _write_atomic(path, buffer.getvalue())
    return cams.astype(np.float32), image.size, image


def explain_cams_compute(*, version: ModelVersion, image: Image) -> np.ndarray:
    """Run the version's model once on a decoded image: every concept's map, (C, h, w) in [0, 1].

    Raises:
        ml.checkpoint.CheckpointError: the version's checkpoint does not verify.
    """
    import torch

    from ml.explain import image_cams
    from training.services.model_cache import model_version_loaded

    # A version's checkpoint holds the full network (training publishes create_model's).
    model = cast("MultiLabelNet", model_version_loaded(version).model)
    # One thread: one image's convolutions split over the cores of a shared 2-core machine wait
    # for each other (a 64 px small CNN: 3 ms on one thread, 20-40 ms median on two under load);
    # the web server's threads and processes are the parallelism. Callers hold _COMPUTE.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return image_cams(model, image)
    finally:
        torch.set_num_threads(threads)


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers see no file or the whole file. Not fsynced: a cache lost to a crash is redrawn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def explain_cache_prune(*, keep: int = KEEP_VERSIONS, also: Iterable[int] = ()) -> list[int]:
    """Remove the cached maps of versions that are neither active nor among the newest ``keep``
    (nor named in ``also``). Folders of versions that no longer exist go too.

    Returns:
        The ids of the versions whose folders were removed.
    """
    root = explain_root()
    if not root.is_dir():
        return []
    kept = set(
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", flat=True)
    )
    kept.update(ModelVersion.objects.order_by("-pk").values_list("pk", flat=True)[:keep])
    kept.update(also)
    removed = []
    for folder in root.iterdir():
        match = _VERSION_DIR.match(folder.name)
        if match is None or not folder.is_dir() or int(match.group(1)) in kept:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(int(match.group(1)))
    if removed:
        logger.info("explain cache: removed the maps of versions %s", sorted(removed))
    return sorted(removed)


def explain_warm() -> bool:
    """Import PyTorch and load the active version's model into this process's cache, so that the
    first evidence map a curator opens does not pay for them (what that costs: bench/README.md,
    "Grad-CAM maps on the item page").

    Called by the web server for each worker as it starts (``gunicorn.conf.py``), in a thread of
    its own. Returns whether a model was loaded; never raises (a bad checkpoint is reported by
    the map views themselves).
    """
    from ml.checkpoint import CheckpointError
    from training.selectors import model_version_active
    from training.services.model_cache import model_version_loaded

    try:
        version = model_version_active()
        if version is None:
            return False
        import ml.explain  # noqa: F401 - the map code and PyTorch, imported once here

        model_version_loaded(version)
        return True
    except CheckpointError as exc:
        # Only loading raises CheckpointError, after the None check.
        logger.warning(
            "evidence maps: the active model v%s is not loaded: %s",
            cast(ModelVersion, version).pk,
            exc,
        )
        return False
    except Exception:  # noqa: BLE001 - a warm-up must never take the worker down
        logger.warning("evidence maps: warming up the active model failed", exc_info=True)
        return False


def prediction_explain_png(
    *,
    item: Item,
    concept_key: str,
    version: ModelVersion | None = None,
    size: int = 512,
    layer: str = "overlay",
) -> bytes:
    """Grad-CAM of one concept on the item's image, as PNG bytes (for the review screens).

    Read from the version's map cache, or drawn once and cached there
    (:mod:`training.services.explain`).

    Args:
        version: default the active version.
        size: the longest side in pixels, clamped to 64..1024 and rounded up to a multiple of 32;
            the aspect ratio is the image's.
        layer: ``"overlay"`` (the map blended over the image) or ``"map"`` (the bare map,
            45% opaque).

    Raises:
        LookupError: no usable image, no active version, or the concept is not one of the
            version's outputs (``MapUnavailable``).
        ml.images.ImageError: the image was refused.
        ml.checkpoint.CheckpointError: the version's checkpoint does not verify.
    """
    return explain_map_png(
        explain_map_request(
            item=item, concept_key=concept_key, size=size, layer=layer, version=version
        )
    )
