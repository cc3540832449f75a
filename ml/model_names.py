"""The names of the models in ``ml.models``' registry, importable without PyTorch.

Web processes check a training request's backbone against these: importing ``ml.models`` there
would load PyTorch (about 1 GB) inside the first request of every web worker (what that cost:
bench/README.md, "The "Retrain now" button"). ``tests/ml/test_models.py`` checks that this list
and the registry agree.
"""

from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = (
    "convnext_tiny", "efficientnet_v2_s", "resnet18", "resnet34", "resnet50", "small_cnn",
    "vit_b_16",
)
