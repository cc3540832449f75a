"""Datasets of (image, soft target, weight), transforms per backbone, and a stable split.

Targets are aggregated posteriors in [0, 1] (soft labels, not 0/1) and every item carries a
weight (how much evidence stands behind its labels). Image sources may be file paths, bytes or
decoded uint8 arrays; files and bytes are decoded only through :mod:`ml.images`, and an image
that fails is dropped from its batch and reported, never raised out of a worker.

Transforms stop at a uint8 tensor: conversion to float and normalisation happen on the device in
the training loop (:func:`normalize`), as in timm's prefetch loader, so workers move a quarter of
the bytes and the GPU does the arithmetic.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ml.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageError, load_image, read_bytes
from ml.models import DataConfig

logger = logging.getLogger(__name__)

ImageSource = str | Path | bytes | np.ndarray
Transform = Callable[[Any], torch.Tensor]


@dataclass(frozen=True)
class AugConfig:
    """Training augmentation. Defaults suit photographs of objects.

    Attributes:
        hflip: random horizontal flip. Turn it off where a mirror image means something else
            (digits, inscriptions, maps).
        scale: lower bound of the random-resized-crop area; 1.0 means a plain resize.
    """

    hflip: bool = True
    scale: float = 1.0


def build_transform(data_config: DataConfig, *, train: bool, aug: AugConfig | None = None
                    ) -> Transform:
    """The transform from a PIL image or a (3, H, W) uint8 tensor to a resized uint8 tensor.

    Args:
        data_config: the backbone's sizes and normalisation (``model.data_config``).
        train: training transform (at ``train_size``, with augmentation) or evaluation transform
            (at ``input_size``, deterministic).
        aug: augmentation settings for training; ignored for evaluation.
    """
    aug = aug or AugConfig()
    if not train:
        size = data_config.input_size
        return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True)])
    size = data_config.train_size
    steps: list[Callable] = [v2.ToImage()]
    if aug.scale < 1.0:
        steps.append(v2.RandomResizedCrop((size, size), scale=(aug.scale, 1.0), antialias=True))
    else:
        steps.append(v2.Resize((size, size), antialias=True))
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


@functools.lru_cache(maxsize=32)
def _mean_std(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building them per batch would be a blocking host-to-GPU copy,
    # which synchronises the stream every step and stalls the training loop.
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return m.to(device), s.to(device)


def normalize(x: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> float, scaled to [0, 1] and normalised per channel."""
    mean, std = _mean_std(tuple(data_config.mean), tuple(data_config.std), x.device)
    return (x.float() - mean) / std


def to_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """A source as something the transforms take: a PIL image, or a (3, H, W) uint8 tensor.

    Raises:
        ImageError: the image was refused (see :mod:`ml.images`).
    """
    if isinstance(source, np.ndarray):
        # Already decoded and trusted (made in-process); only its shape is checked.
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
            raise ImageError(
                f"array image must be (H, W, 3) uint8, got {source.shape} {source.dtype}")
        return torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)  # (3, H, W)
    return load_image(source, max_pixels=max_pixels, max_bytes=max_bytes)


def source_sha256(source: ImageSource, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Content hash of an image source: of the file's bytes, or of a decoded array's pixels.

    Raises:
        ImageError: the file cannot be read (missing, over the byte cap).
    """
    if isinstance(source, np.ndarray):
        digest = hashlib.sha256(f"array:{source.shape}:{source.dtype}:".encode())
        digest.update(np.ascontiguousarray(source).tobytes())
        return digest.hexdigest()
    return hashlib.sha256(read_bytes(source, max_bytes=max_bytes)).hexdigest()


class LabelledImages(Dataset):
    """Images with soft targets (N, C) in [0, 1] and per-sample weights (N,).

    ``dataset[i]`` is ``(image uint8 (3, H, W), target float (C,), weight float, i)``, or
    ``None`` when the image is refused; :func:`collate_skip_broken` drops those from the batch
    and the refusal is logged with the index and reason (and kept in ``errors`` when loading
    runs in the main process). Without a ``transform``, ``fit`` uses the backbone's own.
    """

    def __init__(
        self,
        sources: Sequence[ImageSource] | np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        transform: Transform | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        targets = np.asarray(targets, dtype=np.float32)
        if targets.ndim != 2 or len(targets) != len(sources):
            raise ValueError(f"targets must be (N, C) with N={len(sources)}, got {targets.shape}")
        if np.isnan(targets).any() or targets.min(initial=0) < 0 or targets.max(initial=0) > 1:
            raise ValueError("targets must lie in [0, 1]")
        if weights is None:
            weights = np.ones(len(sources), dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (len(sources),) or (weights < 0).any():
            raise ValueError("weights must be (N,) and non-negative")
        self.sources = sources
        self.targets = torch.from_numpy(targets)
        self.weights = torch.from_numpy(weights)
        self.transform = transform
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.errors: dict[int, str] = {}

    @property
    def num_concepts(self) -> int:
        return self.targets.shape[1]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
        try:
            image = to_image(self.sources[i], max_pixels=self.max_pixels, max_bytes=self.max_bytes)
        except ImageError as exc:
            # A broken image must never kill a training worker: report it and drop it.
            self.errors[i] = f"{exc.state}: {exc}"
            logger.warning("image %d skipped (%s): %s", i, exc.state, exc)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i], self.weights[i], i


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def collate_skip_broken(samples: list[tuple | None]) -> Batch | None:
    """Stack the good samples of a batch; ``None`` when every image in it was refused."""
    good = [s for s in samples if s is not None]
    if not good:
        return None
    images, targets, weights, idx = zip(*good, strict=True)
    return (torch.stack(images), torch.stack(targets), torch.stack(weights),
            torch.tensor(idx, dtype=torch.long))


def preprocess(source: ImageSource, data_config: DataConfig, *,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
               ) -> torch.Tensor:
    """One image -> a normalised (1, 3, S, S) float batch at the backbone's ``input_size``.

    Raises:
        ImageError: the image was refused.
    """
    image = to_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    x = build_transform(data_config, train=False)(image).unsqueeze(0)  # (1, 3, S, S) uint8
    return normalize(x, data_config)


