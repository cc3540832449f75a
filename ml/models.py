"""Model registry and factory: backbones with a multi-label head that returns logits.

Every model is a :class:`MultiLabelNet` (a Vision Transformer a :class:`VisionTransformerNet`,
patch tokens for the map, class token for the features): a trunk, pooling and a linear or MLP
head (with dropout, for MC-dropout). The split follows timm: ``forward_features`` gives the last
feature map (Grad-CAM hooks onto it), ``forward_head`` pools and classifies, ``embed`` gives the
pooled (N, D) features the embedding cache stores. ``forward`` returns raw logits; the sigmoid
lives only in :func:`predict_proba` (the Europeana pilot applied it twice, before a logits loss).

Nothing is downloaded here: ImageNet weights come only from a local safetensors or tensor-only
file (``torch.load(weights_only=True)``); ``ml.weights`` resolves a spec to such a file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for a backbone (timm's ``pretrained_cfg``, trimmed).

    Attributes:
        input_size: side in pixels for evaluation, inference and Grad-CAM.
        train_size: side in pixels for training (the pilot trained ResNets at 128, inferred at 224).
        mean: per-channel mean of the normalisation, on the [0, 1] scale.
        std: per-channel standard deviation of the normalisation.
    """

    input_size: int = 224
    train_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (stored in checkpoints)."""

    name: str
    num_concepts: int
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.0
    kwargs: dict = field(default_factory=dict)


class Head(nn.Module):
    """Multi-label head on pooled features: linear, or a one-hidden-layer MLP.

    Dropout sits before each linear layer so that keeping it on at inference (MC dropout) samples
    different predictions for the same features.
    """

    def __init__(
        self,
        in_features: int,
        num_concepts: int,
        *,
        kind: str = "linear",
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"unknown head {kind!r}: use 'linear' or 'mlp'")
        self.kind = kind
        self.in_features = in_features
        self.num_concepts = num_concepts
        if kind == "linear":
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_concepts))
        else:
            self.layers = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_concepts),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # (N, D) -> (N, C) logits


class MultiLabelNet(nn.Module):
    """A convolutional trunk, global average pooling and a multi-label head.

    Attributes:
        features: the trunk; its last child is the last convolutional block (Grad-CAM target).
        head: the :class:`Head`.
        num_features: D, the width of :meth:`embed`.
        data_config: how inputs must be sized and normalised.
        spec: the architecture, for checkpoints.
    """

    #: How a torchvision checkpoint's keys outside the trunk map onto this model: (prefix,
    #: replacement or None to drop). Keys not named here belong to the trunk (``features.``).
    weights_renames: tuple[tuple[str, str | None], ...] = (
        ("fc.", None),
        ("classifier.", None),
        ("heads.", None),
    )

    def __init__(
        self,
        features: nn.Module,
        num_features: int,
        head: Head,
        *,
        data_config: DataConfig,
        spec: ModelSpec,
        pre_logits: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        # Applied to the pooled features before the head (ConvNeXt's LayerNorm); Identity has no
        # parameters, so the state dicts of the other backbones are unchanged.
        self.pre_logits = pre_logits if pre_logits is not None else nn.Identity()
        self.head = head
        self.num_features = num_features
        self.data_config = data_config
        self.spec = spec

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last convolutional block, whose activations Grad-CAM weighs."""
        return cast(nn.Sequential, self.features)[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 3, H, W) -> (N, D, h, w)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))  # (N, D, h, w) -> (N, D)
        return x if pre_logits else self.head(x)

    def cam_split(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """What Grad-CAM weighs: a map (N, K, h, w), and the function from that map to logits.

        For a CNN the map is the last block's output and the function pools and classifies.
        """
        return self.forward_features(x), self.forward_head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D): what the embedding cache stores and heads train on."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, C); no sigmoid here, see :func:`predict_proba`."""
        return self.forward_head(self.forward_features(x))


ModelFn = Callable[..., MultiLabelNet]
_REGISTRY: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register a model constructor under its function name (timm's ``@register_model``)."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    num_concepts: int,
    weights: str | Path | None = None,
    *,
    head: str = "linear",
    hidden: int = 256,
    dropout: float = 0.0,
    **kwargs: object,
) -> MultiLabelNet:
    """Build a registered model, optionally with backbone weights from a local file.

    Args:
        name: a name from :func:`list_models`.
        num_concepts: C, the number of outputs.
        weights: a local ``.safetensors`` file, or a ``.pt``/``.pth`` tensor-only state dict, in
            the torchvision layout of that backbone (``conv1.weight``...) or this module's own
            (``features.conv1.weight``...). Head weights in it (``fc.*``) are ignored: the head
            is new because the concepts are. Never downloaded.
        head: ``"linear"`` or ``"mlp"``.
        hidden: width of the MLP head's hidden layer.
        dropout: dropout before the head's linear layers (for MC dropout).
        **kwargs: passed to the model constructor (e.g. ``widths`` for ``small_cnn``).

    Raises:
        ValueError: unknown name, or weights that do not fit the backbone.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    if num_concepts < 1:
        raise ValueError("num_concepts must be at least 1")
    spec = ModelSpec(
        name, num_concepts, head=head, hidden=hidden, dropout=dropout, kwargs=dict(kwargs)
    )
    model = _REGISTRY[name](spec=spec, **kwargs)
    if weights is not None:
        load_backbone_weights(model, weights)
    return model


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a tensor-only torch file, never unpickling code.

    Raises:
        ValueError: the file is missing, of an unknown kind, or not a plain tensor state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            # weights_only=True refuses any pickled object other than tensors and plain
            # containers; there is deliberately no fallback to a full unpickle.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError: both mean "refused"
            raise ValueError(
                f"refused to load {path.name}: truncated, damaged or not a tensor-only file ({exc})"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise ValueError(f"{path.name} is not a state dict of tensors")
        return state
    raise ValueError(f"unknown weights format {path.suffix!r}: use .safetensors or .pt/.pth")


def _trunk_key(model: MultiLabelNet, key: str) -> str | None:
    """A checkpoint key in this model's naming, or None for a key that is not the trunk's."""
    if key.startswith(("features.", "pre_logits.")):
        return key  # this module's own layout (and torchvision's for ConvNeXt, EfficientNet)
    if key.startswith("head."):
        return None  # a head of this module's: new concepts, new head
    for prefix, replacement in model.weights_renames:
        if key.startswith(prefix):
            return None if replacement is None else replacement + key.removeprefix(prefix)
    return "features." + key  # torchvision layout: "conv1.weight" -> features.conv1.weight


def load_backbone_weights(model: MultiLabelNet, path: str | Path) -> None:
    """Load trunk weights (and a pre-logits norm) from a local file; strict on everything but
    the head.

    Raises:
        ValueError: keys or shapes of the file do not match the trunk.
    """
    state = load_state_dict_file(path)
    trunk: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        mapped = _trunk_key(model, key)
        if mapped is not None:
            trunk[mapped] = value
    wanted = {k for k in model.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(wanted - set(trunk)), sorted(set(trunk) - wanted)
    name = Path(path).name
    if missing or unexpected:
        raise ValueError(
            f"weights in {name} do not fit {model.spec.name}: "
            + "; ".join(
                part
                for part in (
                    f"{len(missing)} missing ({', '.join(missing[:3])}...)" if missing else "",
                    f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}...)"
                    if unexpected
                    else "",
                )
                if part
            )
        )
    try:
        model.load_state_dict(trunk, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"weights in {name} do not fit {model.spec.name}: {exc}") from exc


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Probabilities (N, C) at inference: eval mode, no autograd, sigmoid of the logits."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        probs = torch.sigmoid(model(x))
    model.train(was_training)
    return probs


def _make(
    features: nn.Module,
    num_features: int,
    spec: ModelSpec,
    data_config: DataConfig,
    *,
    pre_logits: nn.Module | None = None,
    cls: type[MultiLabelNet] = MultiLabelNet,
) -> MultiLabelNet:
    head = Head(
        num_features, spec.num_concepts, kind=spec.head, hidden=spec.hidden, dropout=spec.dropout
    )
    return cls(
        features, num_features, head, data_config=data_config, spec=spec, pre_logits=pre_logits
    )


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


@register_model
def small_cnn(
    *, spec: ModelSpec, widths: tuple[int, ...] = (16, 32, 64, 128), input_size: int = 64
) -> MultiLabelNet:
    """A four-block CNN for CPU: fast enough to train on mosaics in seconds to minutes.

    Each block is conv-BN-ReLU twice; the first three end in 2x2 max-pooling, so a 64-pixel
    input leaves an 8x8 map for Grad-CAM (4x4 per mosaic tile).
    """
    blocks: list[tuple[str, nn.Module]] = []
    c_in = 3
    for i, width in enumerate(widths):
        layers = _conv_bn_relu(c_in, width) + _conv_bn_relu(width, width)
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        blocks.append((f"block{i + 1}", nn.Sequential(*layers)))
        c_in = width
    # Inputs of the small CNN are mosaics and other small images: no resizing up to ImageNet size.
    config = DataConfig(input_size=input_size, train_size=input_size)
    return _make(nn.Sequential(OrderedDict(blocks)), widths[-1], spec, config)


def _torchvision_resnet(arch: str, spec: ModelSpec) -> MultiLabelNet:
    import torchvision

    # weights=None: torchvision never touches the network; local weights are loaded afterwards.
    net = getattr(torchvision.models, arch)(weights=None)
    trunk = nn.Sequential(
        OrderedDict(
            (name, getattr(net, name))
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        )
    )
    # The Europeana pilot trained at 128 px and inferred at 224 px.
    return _make(trunk, net.fc.in_features, spec, DataConfig(input_size=224, train_size=128))


@register_model
def resnet18(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision ResNet-18 trunk (D=512)."""
    return _torchvision_resnet("resnet18", spec)


@register_model
def resnet34(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision ResNet-34 trunk (D=512)."""
    return _torchvision_resnet("resnet34", spec)


@register_model
def resnet50(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision ResNet-50 trunk (D=2048)."""
    return _torchvision_resnet("resnet50", spec)


@register_model
def convnext_tiny(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision ConvNeXt-Tiny trunk (D=768), with its LayerNorm on the pooled features.

    torchvision's recipe trains at 176 px and evaluates at 224 px.
    """
    import torchvision

    net = torchvision.models.convnext_tiny(weights=None)
    norm = net.classifier[0]  # LayerNorm2d over (N, D, 1, 1): a LayerNorm over (N, D)
    pre_logits = nn.LayerNorm(norm.normalized_shape, eps=norm.eps)
    model = _make(
        net.features,
        net.classifier[2].in_features,
        spec,
        DataConfig(input_size=224, train_size=176),
        pre_logits=pre_logits,
    )
    model.weights_renames = (("classifier.0.", "pre_logits."), ("classifier.", None))
    return model


@register_model
def efficientnet_v2_s(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision EfficientNetV2-S trunk (D=1280); trained at 300 px, evaluated at 384 px."""
    import torchvision

    net = torchvision.models.efficientnet_v2_s(weights=None)
    return _make(
        net.features,
        net.classifier[1].in_features,
        spec,
        DataConfig(input_size=384, train_size=300),
    )


class VisionTransformerNet(MultiLabelNet):
    """A torchvision Vision Transformer (without its ``heads``) under a multi-label head.

    ``features`` is the ``VisionTransformer`` itself, so its state dict has torchvision's keys
    (``conv_proj.*``, ``class_token``, ``encoder.*``). ``forward_features`` gives the tokens after
    the final norm (N, 1 + h*w, D); the pooled features are the class token (as torchvision's
    classifier takes them). Inputs must be exactly ``image_size`` pixels square.

    Grad-CAM weighs the tokens that enter the last encoder block (the patch grid, reshaped to
    (D, h, w)) by the gradient of a logit through that block, the final norm and the head: the
    class token reads the patches through the last block's attention, so the gradient there says
    which patches the logit drew on. (The tokens *after* the last block get no gradient from the
    class token, and a map there would be all zeros.)
    """

    # A torchvision VisionTransformer, which ships no types: its encoder, image_size, patch_size.
    features: Any

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last encoder block: Grad-CAM weighs the tokens that enter it."""
        return self.features.encoder.layers[-1]

    def _tokens_before_last_block(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.features
        x = vit._process_input(x)  # (N, 3, H, W) -> (N, h*w, D); checks the input size
        x = torch.cat([vit.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = vit.encoder.dropout(x + vit.encoder.pos_embedding)
        return vit.encoder.layers[:-1](x)  # (N, 1 + h*w, D)

    def _last_block(self, tokens: torch.Tensor) -> torch.Tensor:
        encoder = self.features.encoder
        return encoder.ln(encoder.layers[-1](tokens))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._last_block(self._tokens_before_last_block(x))  # (N, 1 + h*w, D)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x[:, 0])  # the class token: (N, 1 + h*w, D) -> (N, D)
        return x if pre_logits else self.head(x)

    def cam_split(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        tokens = self._tokens_before_last_block(x)
        n, length, dim = tokens.shape
        side = self.features.image_size // self.features.patch_size
        cls = tokens[:, :1].detach()
        grid = tokens[:, 1:].transpose(1, 2).reshape(n, dim, side, side)  # (N, D, h, w)

        def to_logits(act: torch.Tensor) -> torch.Tensor:
            patches = act.flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, h*w, D)
            return self.forward_head(self._last_block(torch.cat([cls, patches], dim=1)))

        return grid, to_logits


def vision_transformer_net(net: nn.Module, spec: ModelSpec) -> VisionTransformerNet:
    """Wrap a torchvision ``VisionTransformer`` (any size) as a :class:`VisionTransformerNet`."""
    net.heads = nn.Identity()  # torchvision's ImageNet classifier: not part of the trunk
    size = int(cast(Any, net).image_size)
    model = _make(
        net,
        int(cast(Any, net).hidden_dim),
        spec,
        DataConfig(input_size=size, train_size=size),
        cls=VisionTransformerNet,
    )
    assert isinstance(model, VisionTransformerNet)
    return model


@register_model
def vit_b_16(*, spec: ModelSpec) -> MultiLabelNet:
    """torchvision ViT-B/16 (D=768) at 224 px, its only input size (position embeddings)."""
    import torchvision

    return vision_transformer_net(torchvision.models.vit_b_16(weights=None), spec)
