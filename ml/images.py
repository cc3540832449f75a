"""Safe image loading: every image crowdloop touches goes through here.

Images come from strangers (manifests, harvests, uploads), so decoding is guarded: a format
allowlist checked on the magic bytes before Pillow sees the file, a pixel limit checked on the
header before any pixels are decoded (Pillow's decompression-bomb warning is an error here too),
truncated files refused, and a byte cap on everything read.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

# Never decode a truncated file as if it were whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


class ImageError(ValueError):
    """An image was refused. ``state`` is the item image state it maps to."""

    state = "invalid"


class NotAnImage(ImageError):
    state = "invalid"


class FormatNotAllowed(ImageError):
    state = "refused"


class ImageTooLarge(ImageError):
    state = "too_large"


class CorruptImage(ImageError):
    state = "corrupt"


class FileNotReadable(ImageError):
    """The path is missing, not a regular file (a folder, FIFO, device) or cannot be opened."""

    state = "missing"


@dataclass(frozen=True)
class ImageInfo:
    """What a successful check found out about an image."""

    format: str
    width: int
    height: int
    sha256: str
    n_bytes: int


def sniff_format(head: bytes) -> str | None:
    """The allowed format named by a file's first bytes, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def read_bytes(
    source: str | Path | bytes | BinaryIO, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """Read an image source into memory, refusing anything over ``max_bytes``."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, Path)):
        data = read_file_capped(Path(source), max_bytes=max_bytes)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"more than the {max_bytes}-byte cap")
    return data


def read_file_capped(path: Path, *, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """Read a regular file, refusing it once more than ``max_bytes`` came.

    The size the file system reports is never trusted (``/dev/zero`` says 0, a file can grow
    while read): at most ``max_bytes + 1`` bytes are read. The file is opened non-blocking and
    checked on the open descriptor, so a FIFO without a writer is refused instead of waited on.
    Without ``follow_symlinks`` a final symlink is refused: a caller that resolved and checked
    the path first cannot be sent elsewhere by a link swapped in afterwards.

    Raises:
        FileNotReadable: missing, not a regular file, or unreadable (the reason is in the message).
        ImageTooLarge: more than ``max_bytes``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise FileNotReadable(f"file not found: {path}") from exc
    except OSError as exc:
        raise FileNotReadable(f"cannot open {path}: {exc.strerror}") from exc
    chunks: list[bytes] = []
    left = max_bytes + 1
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotReadable(f"not a regular file: {path}")
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise FileNotReadable(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if left <= 0:
        raise ImageTooLarge(f"more than the {max_bytes}-byte cap")
    return b"".join(chunks)


def _open_checked(data: bytes, *, max_pixels: int) -> tuple[Image.Image, str]:
    if not data:
        raise NotAnImage("empty file")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise FormatNotAllowed(
            f"not one of the allowed formats ({', '.join(ALLOWED_FORMATS)})"
            if _looks_like_image(data)
            else "not an image (unknown file signature)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise CorruptImage(f"unreadable {fmt} header") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptImage(f"unreadable {fmt} header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImage("image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"decompression bomb: {width}x{height} is over the {max_pixels}-pixel limit"
        )
    frames = getattr(image, "n_frames", 1)
    if frames * width * height > max_pixels * 4:
        raise ImageTooLarge(f"decompression bomb: {frames} frames of {width}x{height}")
    return image, fmt


def _looks_like_image(data: bytes) -> bool:
    head = data[:16]
    return (
        head.startswith((b"II*\x00", b"MM\x00*", b"SIMPLE  =", b"BM"))
        or b"<svg" in data[:512].lower()
    )


def load_image(
    source: str | Path | bytes | BinaryIO,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    mode: str = "RGB",
) -> Image.Image:
    """Decode an image safely and return it fully loaded in ``mode``.

    Raises:
        ImageError: one of its subclasses says why the image was refused.
    """
    image, _ = _decode(read_bytes(source, max_bytes=max_bytes), max_pixels=max_pixels)
    return image.convert(mode) if mode and image.mode != mode else image


def _decode(data: bytes, *, max_pixels: int) -> tuple[Image.Image, str]:
    image, fmt = _open_checked(data, max_pixels=max_pixels)
    try:
        # verify() walks the whole file (CRCs for PNG, structure for the rest); it needs a reopen.
        image.verify()
        image, fmt = _open_checked(data, max_pixels=max_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        raise CorruptImage(f"corrupt or truncated {fmt}: {exc}") from exc
    return image, fmt


def inspect_image(
    source: str | Path | bytes | BinaryIO,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageInfo:
    """Check an image end to end and describe it (format, size, content hash)."""
    data = read_bytes(source, max_bytes=max_bytes)
    image, fmt = _decode(data, max_pixels=max_pixels)
    return ImageInfo(
        format=fmt,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
        n_bytes=len(data),
    )


def make_thumbnail(
    source: str | Path | bytes | BinaryIO,
    *,
    size: int = 256,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """A JPEG thumbnail whose longer side is at most ``size`` pixels."""
    image = load_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()
