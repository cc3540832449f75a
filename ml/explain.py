"""Grad-CAM (Selvaraju et al. 2017) per concept, and a PNG overlay for the review screens.

The map weighs the last convolutional block's activations by the spatially averaged gradient of
one concept's logit (the logit, not the sigmoid, whose saturation would flatten the gradient),
keeps the positive part, upsamples it to the input size and scales it to [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.data import ImageSource, build_transform, normalize, to_image
from ml.models import MultiLabelNet


def grad_cam(model: MultiLabelNet, x: torch.Tensor, concept: int) -> np.ndarray:
    """Grad-CAM map of one concept for one preprocessed image.

    Args:
        model: the network; its ``gradcam_layer`` (last conv block) is used.
        x: a normalised (1, 3, H, W) or (3, H, W) float tensor (see :func:`ml.data.preprocess`).
        concept: index of the concept's output.

    Returns:
        (H, W) float32 in [0, 1]; all zeros when nothing speaks for the concept.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.shape[0] != 1:
        raise ValueError("grad_cam explains one image at a time")
    if not 0 <= concept < model.spec.num_concepts:
        raise ValueError(f"concept {concept} out of range 0..{model.spec.num_concepts - 1}")
    saved: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        saved["act"] = output

    was_training = model.training
    model.eval()  # BatchNorm with running stats, no dropout: explain what inference does
    handle = model.gradcam_layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so the trunk builds a graph even if frozen
            logit = model(x)[0, concept]
            # autograd.grad, not backward(): the parameters' .grad stay untouched.
            (grad,) = torch.autograd.grad(logit, saved["act"])  # (1, K, h, w)
    finally:
        handle.remove()
        model.train(was_training)
    act = saved["act"].detach()  # (1, K, h, w)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): importance of each channel
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).numpy().astype(np.float32)


def explain_image(model: MultiLabelNet, source: ImageSource, concept: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM for an image source at the backbone's input size.

    Returns:
        ``(cam (S, S) in [0, 1], the resized image (S, S, 3) uint8)`` for :func:`overlay_png`.

    Raises:
        ml.images.ImageError: the image was refused.
    """
    image = build_transform(model.data_config, train=False)(to_image(source))  # (3, S, S) uint8
    cam = grad_cam(model, normalize(image.unsqueeze(0), model.data_config), concept)
    return cam, image.permute(1, 2, 0).numpy()


def overlay_png(image: np.ndarray | Image.Image, cam: np.ndarray, *, alpha: float = 0.45,
                cmap: str = "jet") -> bytes:
    """Blend a Grad-CAM map over the image with a matplotlib colormap; return PNG bytes.

    The map is resized to the image when their sizes differ.
    """
    from matplotlib import colormaps  # no pyplot: no GUI backend in a worker

    base = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if base.dtype != np.uint8 or base.ndim != 3 or base.shape[2] != 3:
        raise ValueError("image must be (H, W, 3) uint8")
    h, w = base.shape[:2]
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0, 1)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam).resize((w, h), Image.Resampling.BILINEAR))
    heat = colormaps[cmap](cam)[..., :3] * 255.0  # (H, W, 3) in [0, 255]
    blended = (1 - alpha) * base.astype(np.float32) + alpha * heat
    out = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()
