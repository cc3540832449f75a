"""Pretrained weights by specification: resolve, fetch once into a cache, verify before use.

A *spec* is a torchvision weights name of the backbone (``IMAGENET1K_V2``, ``DEFAULT``...: the file
torchvision would download, under its name, whose sha256 must start with the hex digits in that
name, as ``torch.hub`` checks it), an ``http(s)`` URL pinned as ``#sha256=<64 hex digits>``, or a
local path, optionally pinned the same way. A remote file is fetched once into the cache folder.
Every use verifies the file again (its hash, and that a zip ``.pt`` or ``.safetensors`` file is
complete): a truncated or tampered file is refused with a message, a missing one that cannot be
downloaded (offline) with the file to place and the path to place it at.

Imports neither torch nor Django: a web process checks a request's spec with it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: Where torchvision's weights files live; ``base_url`` replaces it (a mirror, or a test server).
TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"

#: torchvision's weights of the registered backbones: backbone -> weights name -> file name under
#: :data:`TORCHVISION_BASE_URL`, plus the name ``DEFAULT`` stands for. ``tests/ml/test_weights.py``
#: checks these against ``torchvision.models.get_model_weights``. Left out: ``vit_b_16``'s
#: ``IMAGENET1K_SWAG_E2E_V1``, made for 384-pixel inputs where the registered ViT takes 224.
TORCHVISION_WEIGHTS: dict[str, dict[str, str]] = {
    "resnet18": {"IMAGENET1K_V1": "resnet18-f37072fd.pth"},
    "resnet34": {"IMAGENET1K_V1": "resnet34-b627a593.pth"},
    "resnet50": {
        "IMAGENET1K_V1": "resnet50-0676ba61.pth",
        "IMAGENET1K_V2": "resnet50-11ad3fa6.pth",
    },
    "convnext_tiny": {"IMAGENET1K_V1": "convnext_tiny-983f1562.pth"},
    "efficientnet_v2_s": {"IMAGENET1K_V1": "efficientnet_v2_s-dd5fe13b.pth"},
    "vit_b_16": {
        "IMAGENET1K_V1": "vit_b_16-c867db91.pth",
        "IMAGENET1K_SWAG_LINEAR_V1": "vit_b_16_lc_swag-4e70ced5.pth",
    },
}
TORCHVISION_DEFAULT: dict[str, str] = {
    "resnet18": "IMAGENET1K_V1",
    "resnet34": "IMAGENET1K_V1",
    "resnet50": "IMAGENET1K_V2",
    "convnext_tiny": "IMAGENET1K_V1",
    "efficientnet_v2_s": "IMAGENET1K_V1",
    "vit_b_16": "IMAGENET1K_V1",
}

#: torch.hub's rule: the hex digits between the last "-" and the first "." after it.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
_ENUM_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


class WeightsError(ValueError):
    """The weights cannot be used: a bad spec, a hash mismatch, an unreadable file."""


class WeightsMissing(WeightsError):
    """The weights file is not there and could not be fetched; the message says where to put it."""


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights spec.

    Attributes:
        backbone: the model name the weights are for.
        text: the spec as given (what a run records).
        kind: ``"torchvision"``, ``"url"`` or ``"file"``.
        path: where the file is read from: the cache path for the two downloaded kinds.
        url: where a downloaded kind is fetched from ("" for a file).
        sha256: the whole expected sha256 ("" when not pinned).
        sha256_prefix: the expected start of the sha256 (torchvision's file names).
    """

    backbone: str
    text: str
    kind: str
    path: Path
    url: str = ""
    sha256: str = ""
    sha256_prefix: str = ""

    @property
    def downloadable(self) -> bool:
        return bool(self.url)

    def expected(self) -> str:
        """The expected hash in words, for messages."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 starting with {self.sha256_prefix}"
        return "any content (not pinned)"


@dataclass(frozen=True)
class ResolvedWeights:
    """A verified weights file: the spec, the file to read and its whole sha256."""

    spec: WeightsSpec
    path: Path
    sha256: str


def _split_pin(text: str) -> tuple[str, str]:
    """``"x#sha256=<hex>"`` -> ``("x", "<hex>")``; no fragment -> ``(text, "")``."""
    base, sep, fragment = text.partition("#")
    if not sep:
        return text, ""
    key, _, value = fragment.partition("=")
    value = value.strip().lower()
    if key.strip().lower() != "sha256" or not _SHA256.fullmatch(value):
        raise WeightsError(
            f"weights {text!r}: the part after '#' must be sha256=<64 hex digits>, not {fragment!r}"
        )
    return base, value


def torchvision_weights_names(backbone: str) -> list[str]:
    """The torchvision weights names a backbone accepts (``DEFAULT`` included), sorted."""
    names = TORCHVISION_WEIGHTS.get(backbone, {})
    return sorted([*names, "DEFAULT"]) if names else []


def parse_weights_spec(
    backbone: str, text: str, *, cache_dir: str | Path, base_url: str = ""
) -> WeightsSpec:
    """Parse a spec for ``backbone`` without touching the file or the network.

    Args:
        backbone: the registered model name.
        text: a torchvision weights name, ``http(s)://...#sha256=<hex>``, or a local path.
        cache_dir: where downloaded files are kept.
        base_url: replaces torchvision's download folder for weights names ("" keeps it).

    Raises:
        WeightsError: an unknown weights name for the backbone, a URL without its sha256, a
            malformed pin.
    """
    text = text.strip()
    if not text:
        raise WeightsError("an empty weights spec")
    cache_dir = Path(cache_dir)
    if "://" in text:
        url, sha = _split_pin(text)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise WeightsError(f"weights URL {url!r}: only http and https URLs are fetched")
        if not sha:
            raise WeightsError(
                f"weights URL {url!r} needs its sha256: write it as {url}#sha256=<64 hex digits>"
            )
        name = Path(urllib.parse.unquote(parts.path)).name or "weights.pth"
        stem, dot, suffix = name.partition(".")
        return WeightsSpec(
            backbone,
            text,
            "url",
            cache_dir / f"{stem}-{sha[:12]}{dot}{suffix}",
            url=url,
            sha256=sha,
        )
    if _ENUM_NAME.fullmatch(text):
        names = TORCHVISION_WEIGHTS.get(backbone)
        if not names:
            raise WeightsError(
                f"{backbone} has no torchvision weights; give a local file or a URL instead"
            )
        enum = TORCHVISION_DEFAULT[backbone] if text == "DEFAULT" else text
        if enum not in names:
            raise WeightsError(
                f"{text} is not a torchvision weights name of {backbone}; use one of "
                f"{', '.join(torchvision_weights_names(backbone))}"
            )
        file_name = names[enum]
        base = (base_url or TORCHVISION_BASE_URL).rstrip("/") + "/"
        match = _HASH_IN_NAME.search(file_name)
        return WeightsSpec(
            backbone,
            text,
            "torchvision",
            cache_dir / file_name,
            url=base + file_name,
            sha256_prefix=match.group(1) if match else "",
        )
    path, sha = _split_pin(text)
    return WeightsSpec(backbone, text, "file", Path(path).expanduser(), sha256=sha)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_message(spec: WeightsSpec, reason: str) -> str:
    if spec.downloadable:
        return (
            f"{spec.backbone} weights {spec.text!r}: {reason}. Place the file "
            f"{spec.url.rsplit('/', 1)[-1]} (from {spec.url}, {spec.expected()}) at "
            f"{spec.path} (the weights cache) and ask again"
        )
    return f"{spec.backbone} weights file not found: place it at {spec.path} ({reason})"


def _check_complete(path: Path) -> None:
    """Refuse a zip-format torch file or a safetensors file that is cut short or damaged."""
    with path.open("rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors":
        if len(head) < 8:
            raise WeightsError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        try:
            with path.open("rb") as f:
                f.seek(8)
                header = json.loads(f.read(min(length, size)))
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                default=0,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise WeightsError(f"{path.name} is not a readable safetensors file") from None
        if 8 + length + end > size:
            raise WeightsError(
                f"{path.name} is truncated: {size} bytes where its header needs {8 + length + end}"
            )
        return
    if head[:4] == b"PK\x03\x04":  # torch.save's zip format (legacy pickles are checked on load)
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise WeightsError(f"{path.name} is truncated or damaged: {exc}") from None
        if bad is not None:
            raise WeightsError(f"{path.name} is damaged: its entry {bad} fails its CRC check")


def verify_weights(spec: WeightsSpec) -> ResolvedWeights:
    """Check the file that ``spec`` names: present, of the expected hash, complete. No network.

    Raises:
        WeightsMissing: the file is not there.
        WeightsError: a hash mismatch, or a truncated or damaged file.
    """
    path = spec.path
    if not path.is_file():
        raise WeightsMissing(
            _missing_message(spec, "not in the cache yet" if spec.downloadable else "no such file")
        )
    try:
        sha = sha256_of(path)
    except OSError as exc:
        raise WeightsError(f"{spec.backbone} weights {path}: unreadable ({exc})") from None
    if (spec.sha256 and sha != spec.sha256) or (
        spec.sha256_prefix and not sha.startswith(spec.sha256_prefix)
    ):
        raise WeightsError(
            f"{spec.backbone} weights {path}: hash mismatch: its sha256 is {sha}, expected "
            f"{spec.expected()[len('sha256 ') :]}; the file is corrupt, truncated or not the one "
            f"asked for: delete it{' (it is fetched again)' if spec.downloadable else ''}"
        )
    _check_complete(path)
    return ResolvedWeights(spec, path, sha)


def fetch_weights(spec: WeightsSpec, *, timeout: float = 60.0) -> Path:
    """Download a URL or torchvision spec into its cache path unless already there.

    The download goes to a temporary file beside the cache path, is hashed while it streams and
    checked as torch.hub checks it; only a file that passes is renamed into place.

    Raises:
        WeightsMissing: the download failed (offline, refused, HTTP error); the message names the
            file to place and where.
        WeightsError: the downloaded bytes do not match the expected hash.
    """
    if spec.path.is_file() or not spec.downloadable:
        return spec.path
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(spec.url, headers={"User-Agent": "crowdloop"})
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{spec.path.name}.", suffix=".partial", dir=spec.path.parent
    )
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(request, timeout=timeout) as response,
            ):
                expected_size = response.headers.get("Content-Length")
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsMissing(
                _missing_message(spec, f"could not download it from {spec.url} ({reason})")
            ) from None
        written = tmp.stat().st_size
        if expected_size is not None and expected_size.isdigit() and written != int(expected_size):
            raise WeightsMissing(
                _missing_message(
                    spec,
                    f"the download from {spec.url} stopped after {written} of "
                    f"{expected_size} bytes",
                )
            )
        sha = digest.hexdigest()
        if (spec.sha256 and sha != spec.sha256) or (
            spec.sha256_prefix and not sha.startswith(spec.sha256_prefix)
        ):
            raise WeightsError(
                f"{spec.backbone} weights from {spec.url}: hash mismatch: the download's sha256 "
                f"is {sha}, expected {spec.expected()[len('sha256 ') :]}; nothing was kept"
            )
        tmp.replace(spec.path)
    finally:
        tmp.unlink(missing_ok=True)
    return spec.path


def resolve_weights(
    spec: WeightsSpec, *, fetch: bool = True, timeout: float = 60.0
) -> ResolvedWeights:
    """The verified file of a spec, fetched first when it may be and is not cached yet.

    Raises:
        WeightsMissing, WeightsError: as :func:`fetch_weights` and :func:`verify_weights`.
    """
    if fetch:
        fetch_weights(spec, timeout=timeout)
    return verify_weights(spec)
