"""Builders of the model side's tests: tiny training parameters and digit-mosaic items with
final labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management import call_command
from PIL import Image

from ml.mosaics import DIGIT_KEYS, digit_vocabulary, make_mosaics
from tests.ml.builders import TINY_CLIP, tiny_weights
from training.models import ModelVersion, Prediction

# Tiny and fast: a two-block CNN at 16 px trains an epoch on a few dozen mosaics in well under
# a second, which is all the job machinery needs to be exercised.
TINY_PARAMS = {
    "backbone": "small_cnn",
    "mode": "finetune",
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.01,
    "hflip": False,
    "model_kwargs": {"widths": [4, 8], "input_size": 16},
}


@dataclass
class Mosaic:
    labels: np.ndarray  # (n, 10) bool truth
    item_ids: list[int]


def write_mosaic_items(
    n: int, *, seed: int = 3, curated: int | None = None, votes: int = 4, prefix: str = "m"
) -> Mosaic:
    """``n`` mosaic items with images under MEDIA_ROOT; the first ``curated`` reviewed by a
    curator (accepted, the true digits), the rest with confident crowd posteriors."""
    from annotate.models import AggregatedLabel, Concept, Item

    concepts = {c["key"]: c for c in digit_vocabulary()}
    for position, key in enumerate(DIGIT_KEYS):
        Concept.objects.get_or_create(
            key=key, defaults={"label": concepts[key]["label"], "position": position}
        )
    by_key = {c.key: c for c in Concept.objects.filter(key__in=DIGIT_KEYS)}
    mosaics = make_mosaics(n, seed=seed, size=32)
    root = Path(settings.MEDIA_ROOT) / "items"
    root.mkdir(parents=True, exist_ok=True)
    curated = n // 2 if curated is None else curated
    ids = []
    for i in range(n):
        name = f"{prefix}-{seed}-{i:04d}"
        Image.fromarray(mosaics.images[i]).save(root / f"{name}.png")
        keys = [DIGIT_KEYS[d] for d in np.flatnonzero(mosaics.labels[i])]
        item = Item.objects.create(
            external_id=name,
            image_file=f"items/{name}.png",
            image_state=Item.ImageState.OK,
            review_state=Item.ReviewState.ACCEPTED if i < curated else Item.ReviewState.UNREVIEWED,
            curated_concepts=keys if i < curated else [],
            n_classifications=0 if i < curated else votes,
        )
        ids.append(item.pk)
        if i >= curated:
            AggregatedLabel.objects.bulk_create(
                AggregatedLabel(
                    item=item,
                    concept=by_key[key],
                    posterior=0.95 if key in keys else 0.03,
                    votes_for=votes if key in keys else 0,
                    votes_against=0 if key in keys else votes,
                    method="majority",
                )
                for key in DIGIT_KEYS
            )
    return Mosaic(labels=mosaics.labels, item_ids=ids)


def saved_checkpoint(name: str) -> tuple[str, str]:
    """A tiny verified checkpoint under ARTIFACT_ROOT: (sidecar path, sha256)."""
    import numpy as np

    from ml.checkpoint import save_checkpoint
    from ml.models import create_model

    model = create_model("small_cnn", 2, widths=(4,), input_size=16)
    saved = save_checkpoint(
        settings.ARTIFACT_ROOT / "models" / name,
        model,
        config={},
        concepts=["a", "b"],
        thresholds=np.array([0.5, 0.5], dtype=np.float32),
    )
    return f"models/{name}/model.json", saved.sha256


def version(val_map: float | None, *, status: str = "candidate", name: str) -> ModelVersion:
    path, sha256 = saved_checkpoint(name)
    return ModelVersion.objects.create(
        backbone="small_cnn",
        status=status,
        concepts=["a", "b"],
        val_map=val_map,
        checkpoint_path=path,
        checkpoint_sha256=sha256,
        scored_at="2026-01-01T00:00Z",
    )


def zero_shot_files(root: Path) -> tuple[Path, str, Path]:
    """A tiny random CLIP's weights, their sha256 and its architecture file, written in ``root``."""
    weights = root / "tiny-clip.pt"
    sha = tiny_weights(weights, seed=1)
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return weights, sha, config


def zero_shot_command(clip_files: tuple[Path, str, Path], *extra: str) -> ModelVersion:
    """Run ``zero_shot`` with the tiny CLIP; the zero-shot version it made."""
    weights, sha, config = clip_files
    call_command(
        "zero_shot",
        "--model",
        "tiny",
        "--model-config",
        str(config),
        "--weights",
        f"{weights}#sha256={sha}",
        *extra,
    )
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.ZERO_SHOT).latest("pk")


def version_scores(version: ModelVersion) -> dict[int, np.ndarray]:
    """Item id -> the version's stored probabilities."""
    return {p.item_id: p.probabilities() for p in Prediction.objects.filter(model_version=version)}
