"""Item images on disk: checked through ml.images, stored under names from their content hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from ml import images


@dataclass(frozen=True)
class StoredImage:
    """Where an accepted image and its thumbnail now live (paths relative to MEDIA_ROOT)."""

    image_file: str
    thumbnail: str
    info: images.ImageInfo


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


def _write_once(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def image_store(*, data: bytes) -> StoredImage:
    """Check image bytes and keep them with a thumbnail; file names never come from user data.

    Raises:
        ml.images.ImageError: the image was refused (its ``state`` says why).
    """
    info = images.inspect_image(
        data, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.IMAGE_MAX_BYTES
    )
    name = f"{info.sha256[:2]}/{info.sha256}"
    image_file = f"items/{name}.{_EXTENSIONS[info.format]}"
    thumbnail = f"thumbs/{name}.jpg"
    root = Path(settings.MEDIA_ROOT)
    _write_once(root / image_file, data)
    if not (root / thumbnail).exists():
        _write_once(
            root / thumbnail,
            images.make_thumbnail(
                data,
                size=settings.THUMBNAIL_SIZE,
                max_pixels=settings.IMAGE_MAX_PIXELS,
                max_bytes=settings.IMAGE_MAX_BYTES,
            ),
        )
    return StoredImage(image_file=image_file, thumbnail=thumbnail, info=info)


def image_path(relative: str) -> Path:
    """The absolute path of a stored image, refusing anything that would leave MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"path leaves the media root: {relative!r}")
    return path
