"""Grad-CAM (Selvaraju et al. 2017) per concept, and PNG maps for the review screens.

The map weighs the last convolutional block's activations (for a Vision Transformer, the patch
tokens entering its last encoder block: Grad-CAM on tokens, not attention rollout) by the
spatially averaged gradient of one concept's logit (not the sigmoid, whose saturation flattens
the gradient), keeps the positive part and scales it to [0, 1]. The trunk runs once, without
autograd, so each concept's map costs one small backward through the pooling and the head. The
small (h, w) maps are what a cache keeps; :func:`render_png` upsamples one to the size shown.

Imports no torchvision, whose first import is slow in a fresh web process (bench/README.md,
"Grad-CAM maps on the item page"): :func:`model_input` is :func:`ml.data.build_transform`'s
evaluation transform, written with ``torch.nn.functional.interpolate`` as torchvision calls it.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, load_image
from ml.models import DataConfig, MultiLabelNet

#: How much of the heat map's colour goes into a pixel of the overlay (and the bare map's alpha).
ALPHA = 0.45


def model_input(image: Image.Image | np.ndarray, data_config: DataConfig) -> torch.Tensor:
    """An image as the model sees it at inference: (3, S, S) uint8, squashed to the input size.

    The same pixels as ``ml.data.build_transform(data_config, train=False)``: the whole image,
    resized to a square with antialiased bilinear interpolation on uint8 (torchvision's CPU
    path).
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("image must be (H, W, 3) uint8")
    x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)  # (3, H, W)
    size = data_config.input_size
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    x = F.interpolate(x.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return x[0].contiguous()


def _normalize(x: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, normalised per channel (as ``ml.data.normalize``)."""
    mean = torch.tensor(data_config.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(data_config.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() - mean * 255.0) / (std * 255.0)


def grad_cams(model: MultiLabelNet, x: torch.Tensor, concepts: Sequence[int] | None = None
              ) -> np.ndarray:
    """Grad-CAM maps of several concepts for one image, at the last block's resolution.

    Args:
        model: the network; the map is taken on what its ``cam_split`` gives: for a CNN
            ``forward_features`` (the output of its ``gradcam_layer``, the trunk's last block),
            for a Vision Transformer the patch tokens entering its last block.
        x: a normalised (1, 3, H, W) or (3, H, W) float tensor.
        concepts: output indices; default every concept, in output order.

    Returns:
        (len(concepts), h, w) float32, each map in [0, 1]; all zeros where nothing speaks for
        the concept.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError("grad_cam explains one image at a time")
    n = model.spec.num_concepts
    wanted = list(range(n)) if concepts is None else [int(c) for c in concepts]
    for concept in wanted:
        if not 0 <= concept < n:
            raise ValueError(f"concept {concept} out of range 0..{n - 1}")
    param = next(model.parameters(), None)
    x = x.detach().to(param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()  # BatchNorm with running stats, no dropout: explain what inference does
    try:
        with torch.no_grad():
            # (1, K, h, w): no graph through the trunk. A CNN's last block output, pooled and
            # classified by to_logits; a ViT's patch tokens entering its last block, re-run
            # through that block (see ml.models.VisionTransformerNet).
            act, to_logits = model.cam_split(x)
        act = act.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = to_logits(act)[0]  # (C,)
            # autograd.grad, not backward(): the parameters' .grad stay untouched.
            grads = [torch.autograd.grad(logits[c], act, retain_graph=True)[0] for c in wanted]
    finally:
        model.train(was_training)
    grad = torch.cat(grads) if grads else act.new_zeros((0, *act.shape[1:]))  # (m, K, h, w)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (m, K, 1, 1): importance of each channel
    cams = F.relu((weights * act.detach()).sum(dim=1))  # (m, h, w)
    peak = cams.amax(dim=(1, 2), keepdim=True)
    cams = torch.where(peak > 0, cams / peak.clamp_min(1e-12), torch.zeros_like(cams))
    return cams.clamp(0, 1).cpu().numpy().astype(np.float32)


def grad_cam(model: MultiLabelNet, x: torch.Tensor, concept: int) -> np.ndarray:
    """Grad-CAM map of one concept for one preprocessed image, at the input size.

    Args:
        model: the network; its ``gradcam_layer`` (last conv block) is used.
        x: a normalised (1, 3, H, W) or (3, H, W) float tensor (see :func:`ml.data.preprocess`).
        concept: index of the concept's output.

    Returns:
        (H, W) float32 in [0, 1]; all zeros when nothing speaks for the concept.
    """
    cam = torch.from_numpy(grad_cams(model, x, [concept]))  # (1, h, w)
    cam = F.interpolate(cam.unsqueeze(0), size=x.shape[-2:], mode="bilinear",
                        align_corners=False)[0, 0]
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).numpy().astype(np.float32)


def image_cams(model: MultiLabelNet, image: Image.Image | np.ndarray,
               concepts: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM maps (m, h, w) in [0, 1] of a decoded image: one trunk pass for all concepts."""
    x = _normalize(model_input(image, model.data_config).unsqueeze(0), model.data_config)
    return grad_cams(model, x, concepts)


def explain_image(model: MultiLabelNet, source: str | bytes | np.ndarray, concept: int, *,
                  max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM for an image source at the backbone's input size.

    Returns:
        ``(cam (S, S) in [0, 1], the resized image (S, S, 3) uint8)`` for :func:`overlay_png`.

    Raises:
        ml.images.ImageError: the image was refused.
    """
    if isinstance(source, np.ndarray):
        decoded: Image.Image | np.ndarray = source
    else:
        decoded = load_image(source, max_pixels=max_pixels, max_bytes=max_bytes)
    image = model_input(decoded, model.data_config)  # (3, S, S) uint8
    cam = grad_cam(model, _normalize(image.unsqueeze(0), model.data_config), concept)
    return cam, image.permute(1, 2, 0).numpy()


@functools.lru_cache(maxsize=4)
def _palette(cmap: str) -> np.ndarray:
    """(256, 3) uint8 colours of a matplotlib colormap: a table lookup instead of a call."""
    from matplotlib import colormaps  # no pyplot: no GUI backend in a worker

    return np.round(colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def display_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(w, h) with the longest side ``longest`` and the aspect ratio of ``width`` x ``height``."""
    if width >= height:
        return longest, max(1, round(height * longest / width))
    return max(1, round(width * longest / height)), longest


def _cam_at(cam: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A small map upsampled (bilinear) to ``size`` = (w, h), as an "L" image of 0..255."""
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0, 1) * 255.0
    if cam.shape != (size[1], size[0]):
        cam = np.asarray(Image.fromarray(cam).resize(size, Image.Resampling.BILINEAR))
    return Image.fromarray(np.clip(np.rint(cam), 0, 255).astype(np.uint8))


def _png(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    # Level 1: a 512-pixel overlay is written in about half the time of level 3 and is about 6%
    # larger (a third of the time of the default 6, 18% larger); maps are cached anyway.
    image.save(out, format="PNG", compress_level=1, **options)
    return out.getvalue()


def render_png(cam: np.ndarray, *, image: Image.Image | None, size: tuple[int, int],
               alpha: float = ALPHA, cmap: str = "jet") -> bytes:
    """One map as a PNG of ``size`` = (w, h): blended over ``image``, or bare when it is None.

    Args:
        cam: (h, w) in [0, 1], any resolution: upsampled bilinearly to ``size``.
        image: the picture under the map (resized to ``size``); None for the bare map, whose
            every pixel has the opacity ``alpha``, so that laid over the same picture at the
            same size it looks like the blended overlay.
        size: (width, height) of the result.
    """
    heat = _cam_at(cam, size)
    heat.putpalette(_palette(cmap).tobytes())  # "L" -> "P": the colormap as a PNG palette
    alpha_8 = round(alpha * 255)  # the bare map's alpha byte; the blend uses the same weight
    if image is None:
        # A palette PNG with one alpha per entry (tRNS): a quarter of the bytes of RGBA to
        # compress, and the smooth map compresses well.
        return _png(heat, transparency=bytes([alpha_8]) * 256)
    base = image.convert("RGB")
    if base.size != size:
        base = base.resize(size, Image.Resampling.LANCZOS)
    return _png(Image.blend(base, heat.convert("RGB"), alpha_8 / 255))


def overlay_png(image: np.ndarray | Image.Image, cam: np.ndarray, *, alpha: float = ALPHA,
                cmap: str = "jet") -> bytes:
    """Blend a Grad-CAM map over the image with a matplotlib colormap; return PNG bytes.

    The map is resized to the image when their sizes differ.
    """
    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if base.dtype != np.uint8 or base.ndim != 3 or base.shape[2] != 3:
        raise ValueError("image must be (H, W, 3) uint8")
    h, w = base.shape[:2]
    return render_png(cam, image=Image.fromarray(base), size=(w, h), alpha=alpha, cmap=cmap)
