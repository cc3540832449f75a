"""Zero-shot concept scores from an image-text model (CLIP, through open_clip), before any label.

Each concept is scored on its own (multi-label, no softmax over the vocabulary):

    p_c(image) = sigmoid(scale * (cos(image, concept_c) - cos(image, neutral)))

``concept_c`` is the mean embedding of the templates filled with the concept's label and its
description, ``neutral`` the same templates filled with "an object", ``scale`` the model's own
logit scale (at most 100): 0.5 when the image is as close to the concept as to a generic object.
No "not {label}" prompt: CLIP text towers read negations poorly. Weights are a local file or a
sha256-pinned URL (:func:`weights_fetch`, through :mod:`ml.weights`), never a model hub; open_clip
is imported inside the functions that build models, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ml.models import DataConfig

# open_clip's OPENAI_DATASET_MEAN / STD, copied so the constants need no open_clip import.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a museum photograph of {}.",
    "an image showing {}.",
)
NEUTRAL = "an object"
MAX_LOGIT_SCALE = 100.0


class ZeroShotError(ValueError):
    """A zero-shot model that cannot be built: unknown config, bad weights, refused download."""


# ---------------------------------------------------------------------------- weights


def weights_fetch(
    spec: str, *, cache_dir: str | Path, name: str = "clip", timeout: float = 60.0
) -> tuple[Path, str]:
    """The verified local weights file of ``spec``, and its sha256.

    The spec follows :mod:`ml.weights`: a local file (``/w/clip.bin``, optionally pinned as
    ``/w/clip.bin#sha256=<hex>``) or an http(s) URL pinned the same way, downloaded once into
    ``cache_dir`` and refused unless its sha256 is exactly the pinned one.

    Raises:
        ZeroShotError: a missing file, an unpinned URL, a failed download, a hash mismatch.
    """
    from ml.weights import WeightsError, parse_weights_spec, resolve_weights

    try:
        parsed = parse_weights_spec(name, spec, cache_dir=cache_dir)
        if parsed.kind == "torchvision":
            raise WeightsError(f"{spec!r} is a torchvision weights name, not CLIP weights")
        resolved = resolve_weights(parsed, timeout=timeout)
    except WeightsError as exc:
        raise ZeroShotError(str(exc)) from exc
    return resolved.path, resolved.sha256


# ---------------------------------------------------------------------------- prompts


def concept_prompts(
    label: str, description: str = "", *, templates: Sequence[str] = TEMPLATES
) -> list[str]:
    """The prompts of one concept: every template with its label, then with its description.

    Only the description's first sentence is used (prompts are cut at 77 tokens anyway).
    """
    variants = [label.strip()]
    first = description.strip().split(". ")[0].strip().rstrip(".")
    if first and first.lower() != variants[0].lower():
        variants.append(first)
    return [t.format(v) for v in variants if v for t in templates]


def neutral_prompts(*, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """The prompts of the neutral reference: the same templates with a generic object."""
    return [t.format(NEUTRAL) for t in templates]


def concept_scores(
    image_embeddings: np.ndarray | torch.Tensor,
    concept_embeddings: np.ndarray | torch.Tensor,
    neutral_embedding: np.ndarray | torch.Tensor,
    scale: float,
) -> np.ndarray:
    """Per-concept probabilities ``(n, C)``: sigmoid(scale * (cos(x, concept) - cos(x, neutral))).

    Every input is L2-normalised here, so raw features may be passed.
    """
    x = _unit(torch.as_tensor(np.asarray(image_embeddings), dtype=torch.float32))  # (n, D)
    t = _unit(torch.as_tensor(np.asarray(concept_embeddings), dtype=torch.float32))  # (C, D)
    t0 = _unit(torch.as_tensor(np.asarray(neutral_embedding), dtype=torch.float32).reshape(1, -1))
    logits = scale * (x @ t.T - x @ t0.T)  # (n, C) - (n, 1)
    return torch.sigmoid(logits).numpy().astype(np.float32)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------- model


def clip_config(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The architecture of an open_clip model: ``config`` when given, else open_clip's by name.

    Raises:
        ZeroShotError: an unknown name, or a model whose tokenizer or towers would need a model
            hub (Hugging Face text towers and tokenizers, timm towers).
    """
    if config is None:
        import open_clip

        config = open_clip.get_model_config(name)
        if config is None:
            raise ZeroShotError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    config = dict(config)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ZeroShotError(f"model config of {name!r} has no {key!r}")
    text, vision = dict(config["text_cfg"]), dict(config["vision_cfg"])
    if any(k.startswith("hf_") for k in text) or vision.get("timm_model_name"):
        raise ZeroShotError(
            f"{name!r} needs a Hugging Face or timm tower: only open_clip's own towers and "
            "tokenizer work offline"
        )
    if not isinstance(vision.get("image_size", 224), int):
        raise ZeroShotError(f"{name!r}: only square image sizes are supported")
    return config


class ZeroShotModel(nn.Module):
    """A CLIP model with its tokenizer and the concepts' text embeddings.

    It exposes what :func:`ml.embeddings.compute_embeddings` needs (``embed``, ``data_config``,
    ``num_features``), so image embeddings are computed and cached like a backbone's; ``forward``
    gives per-concept logits once :meth:`set_concepts` has been called.
    """

    # open_clip ships no types: its CLIP model (encode_image, encode_text, logit_scale).
    clip: Any
    concept_text: torch.Tensor  # buffers
    neutral_text: torch.Tensor

    def __init__(self, clip: nn.Module, *, name: str, config: dict[str, Any]) -> None:
        super().__init__()
        import open_clip

        self.clip = clip
        self.name = name
        self.config = config
        context = int(config["text_cfg"].get("context_length", 77))
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context)
        size = int(config["vision_cfg"].get("image_size", 224))
        self.data_config = DataConfig(
            input_size=size, train_size=size, mean=CLIP_MEAN, std=CLIP_STD
        )
        self.num_features = int(config["embed_dim"])
        self.register_buffer("concept_text", torch.zeros(0, self.num_features))  # (C, D)
        self.register_buffer("neutral_text", torch.zeros(self.num_features))  # (D,)

    @property
    def scale(self) -> float:
        return float(self.clip.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings ``(P, D)`` of the prompts."""
        device = self.concept_text.device
        tokens = self.tokenizer(list(prompts)).to(device)
        return _unit(self.clip.encode_text(tokens).float())

    @torch.inference_mode()
    def set_concepts(self, prompts: Sequence[Sequence[str]]) -> None:
        """Embed each concept's prompts (averaged, then normalised) and the neutral prompts."""
        if not prompts or any(not p for p in prompts):
            raise ZeroShotError("every concept needs at least one prompt")
        self.concept_text = torch.stack([_unit(self.encode_text(p).mean(0)) for p in prompts])
        self.neutral_text = _unit(self.encode_text(neutral_prompts()).mean(0))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings ``(B, D)`` of normalised images ``(B, 3, S, S)``."""
        return _unit(self.clip.encode_image(x).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-concept logits ``(B, C)``; ``sigmoid`` of them is :func:`concept_scores`."""
        v = self.embed(x)
        return self.scale * (v @ self.concept_text.T - (v @ self.neutral_text)[:, None])

    def scores(self, image_embeddings: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, C)`` from image embeddings (computed or cached)."""
        return concept_scores(
            image_embeddings, self.concept_text.cpu(), self.neutral_text.cpu(), self.scale
        )


def create_zero_shot_model(
    name: str,
    *,
    weights: str | Path | None,
    config: dict[str, Any] | None = None,
) -> ZeroShotModel:
    """Build an open_clip CLIP and load a weights file (``None``: random, for tests only).

    Args:
        name: the open_clip model name (``ViT-B-32``), or any name when ``config`` is given.
        weights: a verified local state-dict file (``.safetensors`` or tensor-only ``.pt``/``.bin``,
            see :func:`weights_fetch`).
        config: an architecture dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) instead of
            open_clip's by name.

    Raises:
        ZeroShotError: unknown or unsupported architecture, weights that are not a tensor-only
            state dict of it.
    """
    from open_clip.model import CLIP, CustomTextCLIP

    from ml.models import load_state_dict_file

    cfg = clip_config(name, config)
    kwargs = {k: v for k, v in cfg.items() if k != "custom_text"}
    cls = CustomTextCLIP if cfg.get("custom_text") else CLIP
    try:
        clip = cls(**kwargs)
    except TypeError as exc:
        raise ZeroShotError(f"bad model config for {name!r}: {exc}") from exc
    if weights is not None:
        try:
            state = load_state_dict_file(weights)
        except ValueError as exc:
            raise ZeroShotError(str(exc)) from exc
        if next(iter(state), "").startswith("module."):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        if "logit_scale" in state:
            state["logit_scale"] = state["logit_scale"].reshape(clip.logit_scale.shape)
        try:
            clip.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ZeroShotError(f"weights do not fit {name!r}: {exc}") from exc
    return ZeroShotModel(clip, name=name, config=cfg).eval()


def embedding_key(name: str, weights_sha256: str, input_size: int) -> str:
    """The embedding-cache key of a zero-shot model's image features (name, weights, size)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return f"zero_shot-{safe}-{input_size}-{weights_sha256[:32]}"
