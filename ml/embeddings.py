"""Embedding cache: backbone features computed once per image and per backbone weights.

Features are keyed by the image's content hash (:func:`ml.data.source_sha256`) under a *model
key* (backbone, weights hash, input preprocessing), so changed weights or input size simply miss::

    <root>/<model_key>/index.json        {"dim": D, "rows": {sha256: [chunk, row]}, "chunks": [...]}
    <root>/<model_key>/chunk-000000.npy  (n, D) float32, opened with mmap_mode="r"

New features are appended as a chunk file, then the index is rewritten atomically under a file
lock: two workers filling one cache never corrupt it (at worst both compute an image once).
Reads map the chunks, so a pool of a million items needs no features in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ml.checkpoint import atomic_write_bytes
from ml.data import ImageSource, build_transform, normalize, source_sha256, to_image
from ml.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError
from ml.models import MultiLabelNet


def model_key(model: MultiLabelNet) -> str:
    """A key for the features a model's trunk produces: name, input config and weights hash.

    The hash covers every trunk tensor (name, dtype, shape, bytes), so retrained or different
    pretrained weights never read another backbone's features. The head does not count.
    """
    digest = hashlib.sha256()
    cfg = model.data_config
    digest.update(f"{model.spec.name}|{cfg.input_size}|{cfg.mean}|{cfg.std}".encode())
    trunk = {**model.features.state_dict(),  # and a pre-logits norm's (ConvNeXt), if any
             **{f"pre_logits.{k}": v for k, v in model.pre_logits.state_dict().items()}}
    for name, tensor in sorted(trunk.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{model.spec.name}-{digest.hexdigest()[:32]}"


class EmbeddingCache:
    """Memory-mapped features for one model key under ``root``.

    Args:
        root: cache directory (shared by all backbones).
        key: the model key (:func:`model_key`).
        dim: D, the feature width.
    """

    def __init__(self, root: str | Path, key: str, dim: int) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._chunks: dict[str, np.ndarray] = {}
        self._index = self._read_index()
        if self._index["dim"] != dim:
            raise ValueError(
                f"cache at {self.dir} holds {self._index['dim']}-d features, not {dim}")

    def _read_index(self) -> dict:
        path = self.dir / "index.json"
        if not path.exists():
            return {"dim": self.dim, "rows": {}, "chunks": []}
        return json.loads(path.read_text())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def __len__(self) -> int:
        return len(self._index["rows"])

    def __contains__(self, sha: str) -> bool:
        return sha in self._index["rows"]

    def _chunk(self, name: str) -> np.ndarray:
        if name not in self._chunks:
            self._chunks[name] = np.load(self.dir / name, mmap_mode="r")
        return self._chunks[name]

    def get(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, D) float32 for the hashes, and a found mask (n,); missing rows are 0."""
        self._index = self._read_index()  # another worker may have added rows
        rows = self._index["rows"]
        out = np.zeros((len(hashes), self.dim), dtype=np.float32)
        found = np.zeros(len(hashes), dtype=bool)
        by_chunk: dict[str, list[tuple[int, int]]] = {}
        for i, sha in enumerate(hashes):
            if sha in rows:
                chunk, row = rows[sha]
                by_chunk.setdefault(chunk, []).append((i, row))
                found[i] = True
        for chunk, pairs in by_chunk.items():
            dst, src = map(np.asarray, zip(*pairs, strict=True))
            out[dst] = self._chunk(chunk)[src]
        return out, found

    def put(self, hashes: Sequence[str], features: np.ndarray) -> None:
        """Store features (n, D) for the hashes as a new chunk (first writer of a hash wins)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape != (len(hashes), self.dim):
            raise ValueError(f"features must be ({len(hashes)}, {self.dim}), got {features.shape}")
        if not len(hashes):
            return
        name = f"chunk-{uuid.uuid4().hex}.npy"
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, features)
        with self._locked():
            index = self._read_index()
            tmp.rename(self.dir / name)
            index["chunks"].append(name)
            for row, sha in enumerate(hashes):
                index["rows"].setdefault(sha, [name, row])
            atomic_write_bytes(self.dir / "index.json", json.dumps(index).encode())
            self._index = index


@dataclass
class EmbeddingResult:
    """Features for a list of sources, in order.

    Attributes:
        features: (n, D) float32; rows of refused images are 0.
        ok: (n,) whether each image was embedded.
        hashes: (n,) content sha256 per source ("" where the file could not be read).
        failures: index -> reason, for refused images.
        n_cached: how many were read from the cache.
        n_computed: how many went through the backbone.
    """

    features: np.ndarray
    ok: np.ndarray
    hashes: list[str]
    failures: dict[int, str] = field(default_factory=dict)
    n_cached: int = 0
    n_computed: int = 0


class _Images(Dataset):
    def __init__(self, sources: Sequence[ImageSource] | np.ndarray, positions: list[int],
                 transform: Callable, max_pixels: int, max_bytes: int) -> None:
        self.sources, self.positions, self.transform = sources, positions, transform
        self.max_pixels, self.max_bytes = max_pixels, max_bytes

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[torch.Tensor | None, int, str]:
        i = self.positions[k]
        try:
            image = to_image(self.sources[i], max_pixels=self.max_pixels, max_bytes=self.max_bytes)
        except ImageError as exc:
            return None, i, f"{exc.state}: {exc}"
        return self.transform(image), i, ""


def _collate(samples: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    good = [(x, i) for x, i, _ in samples if x is not None]
    bad = [(i, why) for x, i, why in samples if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def compute_embeddings(
    model: MultiLabelNet,
    sources: Sequence[ImageSource] | np.ndarray,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> EmbeddingResult:
    """Embed images with the model's trunk, reading and filling the cache.

    Args:
        model: the backbone (its head is not used).
        sources: file paths, bytes or (H, W, 3) uint8 arrays.
        cache: where features are looked up and stored; None computes everything.
        batch_size: images per forward pass.
        device: where the backbone runs.
        num_workers: DataLoader workers decoding images.
        progress: called with ``(done, total)`` after each batch (and once for cache hits).
        max_pixels: image pixel limit passed to :func:`ml.images.load_image`.
        max_bytes: image byte cap.

    Returns:
        The :class:`EmbeddingResult`; refused images are reported there, not raised.
    """
    n = len(sources)
    features = np.zeros((n, model.num_features), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    hashes: list[str] = []
    failures: dict[int, str] = {}
    for i in range(n):
        try:
            hashes.append(source_sha256(sources[i], max_bytes=max_bytes))
        except ImageError as exc:
            hashes.append("")
            failures[i] = f"{exc.state}: {exc}"
    n_cached = 0
    if cache is not None:
        cached, found = cache.get(hashes)
        found &= np.array([h != "" for h in hashes], dtype=bool)
        features[found], ok[found] = cached[found], True
        n_cached = int(found.sum())
    todo = [i for i in range(n) if not ok[i] and i not in failures]
    done = n - len(todo)
    if progress is not None:
        progress(done, n)

    device = torch.device(device)
    transform = build_transform(model.data_config, train=False)
    loader = DataLoader(_Images(sources, todo, transform, max_pixels, max_bytes),
                        batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval().to(device)
    with torch.inference_mode():
        for images, idx, bad in loader:
            failures.update(dict(bad))
            if images is not None:
                x = normalize(images.to(device, non_blocking=True), model.data_config)
                emb = model.embed(x).float().cpu().numpy()  # (B, D)
                features[idx], ok[idx] = emb, True
                if cache is not None:
                    cache.put([hashes[i] for i in idx], emb)
            done += len(idx) + len(bad)
            if progress is not None:
                progress(done, n)
    model.train(was_training)
    return EmbeddingResult(features=features, ok=ok, hashes=hashes, failures=failures,
                           n_cached=n_cached, n_computed=len(todo) - sum(
                               1 for i in todo if i in failures))
