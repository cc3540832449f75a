"""Builders of the zero-shot tests: a tiny CLIP configuration and its saved random weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ml.zero_shot import create_zero_shot_model

#: A CLIP small enough for a CPU test: ViT of width 64, 2 layers, 32 px in patches of 8, and a
#: text transformer of width 64 over open_clip's own BPE vocabulary (shipped with the package).
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_weights(path: Path, *, seed: int = 0) -> str:
    """Save the state dict of a tiny CLIP initialised with ``seed``; return its sha256."""
    torch.manual_seed(seed)
    model = create_zero_shot_model("tiny", weights=None, config=TINY_CLIP)
    torch.save(model.clip.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
