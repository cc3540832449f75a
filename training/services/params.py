"""Training parameters: what a request may ask for, checked before a run row exists."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from ml.model_names import MODEL_NAMES
from ml.weights import (
    ResolvedWeights,
    WeightsError,
    WeightsMissing,
    WeightsSpec,
    parse_weights_spec,
    resolve_weights,
    verify_weights,
)


class TrainingParamsError(ValueError):
    """A request asked for something a run cannot do; nothing was created."""


# Random trunk features are worthless, so without local pretrained weights the only way for a
# small CPU model to learn anything is to train the whole (tiny) network; these defaults train a
# three-block CNN at 32 px, a few seconds per epoch on a CPU for the demo's few hundred mosaics.
SMALL_CNN_DEFAULTS: dict[str, Any] = {"widths": [16, 32, 64], "input_size": 32}


@dataclass(frozen=True)
class TrainingParams:
    """The knobs of one run, stored as JSON on the run row.

    Attributes:
        backbone: a name from ``ml.models.list_models()`` (``ml.model_names.MODEL_NAMES``).
        weights: the pretrained weights spec of the trunk (``ml.weights``: a torchvision weights
            name, a URL with its sha256, a local path); "" for none. Defaults to the backbone's
            entry in TRAINING_BACKBONE_WEIGHTS; a request's ``"none"`` asks for none.
        mode: ``"head"`` (a head on cached features: needs pretrained weights to be useful) or
            ``"finetune"`` (the whole network).
        epochs: at most this many epochs (early stopping may end sooner).
        batch_size, lr, seed, head, loss, hflip: passed to ``ml.train.TrainConfig``.
        dropout: dropout before the head's linear layers. Above zero, round selection samples the
            head with dropout on (MC dropout) and BALD runs; at zero BALD falls back to entropy.
        hidden: width of the hidden layer of an ``mlp`` head.
        model_kwargs: constructor options of ``small_cnn`` (``widths``, ``input_size``).
        lease_seconds: how long a claim lasts without a heartbeat; renewed every epoch, so it must
            be longer than the slowest epoch.
    """

    backbone: str = "small_cnn"
    weights: str = ""
    mode: str = ""
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    head: str = "linear"
    loss: str = "bce"
    hflip: bool = True
    dropout: float = 0.2
    hidden: int = 256
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lease_seconds: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_ALLOWED_KWARGS = {"small_cnn": {"widths", "input_size"}}


#: What a request writes to train without the pretrained weights the settings give.
NO_WEIGHTS = "none"


def backbone_weights(backbone: str) -> str | None:
    """The backbone's pretrained weights spec from TRAINING_BACKBONE_WEIGHTS, if any."""
    return settings.TRAINING_BACKBONE_WEIGHTS.get(backbone) or None


def weights_cache_dir() -> Path:
    """Where downloaded weights are kept: ARTIFACT_ROOT/weights."""
    return Path(settings.ARTIFACT_ROOT) / "weights"


def weights_spec(backbone: str, text: str) -> WeightsSpec:
    """Parse a weights spec against the cache folder and TRAINING_WEIGHTS_BASE_URL.

    Raises:
        ml.weights.WeightsError: a malformed spec, or a weights name the backbone does not have.
    """
    return parse_weights_spec(backbone, text, cache_dir=weights_cache_dir(),
                              base_url=settings.TRAINING_WEIGHTS_BASE_URL)


def run_weights(params: dict[str, Any]) -> str:
    """A stored run's weights spec ("" for none); runs stored before the field use the setting."""
    if "weights" in params:
        return str(params["weights"] or "")
    return backbone_weights(str(params["backbone"])) or ""


def weights_resolve(backbone: str, text: str, *, fetch: bool = True) -> ResolvedWeights:
    """The verified weights file of a spec, downloaded into the cache first when need be.

    Raises:
        ml.weights.WeightsError: a bad spec, a hash mismatch, an unreadable file;
            ``WeightsMissing`` when the file is absent and cannot be downloaded, naming where to
            place it.
    """
    return resolve_weights(weights_spec(backbone, text), fetch=fetch)


def training_weights_check(params: TrainingParams, *, fetch: bool = False) -> None:
    """Check a request's weights before a run row exists, so that it fails now, not in a worker.

    A local file must be there, complete and of its pinned hash. A file already in the cache is
    verified. A torchvision name or URL not in the cache yet is downloaded when ``fetch`` (the
    ``train`` command), and otherwise left to the worker (a web request does not download
    hundreds of megabytes); the worker verifies every file again before use.

    Raises:
        TrainingParamsError: with the weights' message (which file, where to place it, why).
    """
    if not params.weights:
        return
    try:
        spec = weights_spec(params.backbone, params.weights)
        if fetch:
            resolve_weights(spec)
        else:
            verify_weights(spec)
    except WeightsMissing as exc:
        if fetch or not spec.downloadable:
            raise TrainingParamsError(str(exc)) from None
    except WeightsError as exc:
        raise TrainingParamsError(str(exc)) from None


def training_params_parse(raw: dict[str, Any] | None) -> TrainingParams:
    """Validate and complete request parameters; unknown keys are refused, not ignored.

    Raises:
        TrainingParamsError: with a message naming the bad field.
    """
    raw = dict(raw or {})
    known = set(TrainingParams.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TrainingParamsError(f"unknown training parameters: {', '.join(unknown)}")
    defaults = TrainingParams()
    backbone = str(raw.get("backbone") or settings.TRAINING_BACKBONE)
    if backbone not in MODEL_NAMES:  # not ml.models: a web request must not load PyTorch
        raise TrainingParamsError(
            f"backbone {backbone!r} is not one of {', '.join(MODEL_NAMES)}"
        )
    weights = raw.get("weights")
    if weights is None:
        weights = backbone_weights(backbone) or ""
    if not isinstance(weights, str):
        raise TrainingParamsError("weights must be a text: a weights name, a URL or a path")
    weights = "" if weights.strip().lower() == NO_WEIGHTS else weights.strip()
    if weights:
        try:
            weights_spec(backbone, weights)
        except WeightsError as exc:
            raise TrainingParamsError(str(exc)) from None
    mode = str(raw.get("mode") or ("head" if weights else "finetune"))
    if mode not in ("head", "finetune"):
        raise TrainingParamsError("mode must be 'head' or 'finetune'")
    if backbone != "small_cnn" and not weights and mode == "head":
        raise TrainingParamsError(
            f"mode 'head' needs pretrained weights for {backbone}: give --weights or set "
            "TRAINING_BACKBONE_WEIGHTS"
        )

    def number(name: str, kind: type, low: float, high: float) -> Any:
        value = raw.get(name, getattr(defaults, name))
        if name == "epochs" and "epochs" not in raw:
            value = settings.TRAINING_EPOCHS
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise TrainingParamsError(f"{name} must be a number") from None
        if isinstance(value, bool) or not low <= value <= high:
            raise TrainingParamsError(f"{name} must be between {low} and {high}")
        return value

    model_kwargs = raw.get("model_kwargs") or {}
    if not isinstance(model_kwargs, dict):
        raise TrainingParamsError("model_kwargs must be an object")
    bad = sorted(set(model_kwargs) - _ALLOWED_KWARGS.get(backbone, set()))
    if bad:
        raise TrainingParamsError(f"model_kwargs not allowed for {backbone}: {', '.join(bad)}")
    if backbone == "small_cnn":
        model_kwargs = {**SMALL_CNN_DEFAULTS, **model_kwargs}
        widths = model_kwargs["widths"]
        if (not isinstance(widths, list) or not 1 <= len(widths) <= 6
                or not all(isinstance(w, int) and 1 <= w <= 512 for w in widths)):
            raise TrainingParamsError("model_kwargs.widths must be 1 to 6 integers of 1 to 512")
        size = model_kwargs["input_size"]
        if not isinstance(size, int) or not 8 <= size <= 512:
            raise TrainingParamsError("model_kwargs.input_size must be an integer of 8 to 512")
    head = str(raw.get("head", defaults.head))
    loss = str(raw.get("loss", defaults.loss))
    if head not in ("linear", "mlp") or loss not in ("bce", "asl"):
        raise TrainingParamsError("head must be linear or mlp; loss must be bce or asl")
    hflip = raw.get("hflip", defaults.hflip)
    if not isinstance(hflip, bool):
        raise TrainingParamsError("hflip must be true or false")
    dropout = raw.get("dropout", defaults.dropout)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not (
        0.0 <= dropout < 1.0
    ):
        raise TrainingParamsError("dropout must be a number from 0 to below 1")
    lease_default = int(settings.TRAINING_LEASE_SECONDS)
    lease = number("lease_seconds", int, 0, 86_400) or lease_default
    return TrainingParams(
        backbone=backbone,
        weights=weights,
        mode=mode,
        epochs=number("epochs", int, 1, 1000),
        batch_size=number("batch_size", int, 1, 4096),
        lr=number("lr", float, 1e-7, 1.0),
        seed=number("seed", int, 0, 2**31 - 1),
        head=head,
        loss=loss,
        hflip=hflip,
        dropout=float(dropout),
        hidden=number("hidden", int, 1, 8192),
        model_kwargs=model_kwargs,
        lease_seconds=max(1, lease),
    )


def training_device() -> str:
    """The torch device training and scoring run on: ``TRAINING_DEVICE``, "auto" resolved to
    "cuda" where a GPU is there and "cpu" otherwise."""
    if settings.TRAINING_DEVICE != "auto":
        return settings.TRAINING_DEVICE
    import torch  # here: this module is imported by web processes, which never need torch

    return "cuda" if torch.cuda.is_available() else "cpu"
