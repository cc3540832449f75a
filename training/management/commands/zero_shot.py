from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from training.models import ModelVersion
from training.services.scoring import zero_shot_scoring_start
from training.services.zero_shot import (
    ZeroShotServiceError,
    zero_shot_pool_score,
    zero_shot_version_create,
)


class Command(BaseCommand):
    help = (
        "Score the pool with an image-text model (open_clip CLIP), no training: a zero-shot "
        "model version that chooses the first round and flags prior labels it doubts. It is "
        "never made active. Weights: a local file or URL#sha256=<hex> (no model hub). "
        "Scores here with a progress bar, or with --in-workers in chunks on the train queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)."
        )
        parser.add_argument(
            "--weights",
            default=None,
            help="Weights file, pinned or not (PATH[#sha256=HEX]), or https://...#sha256=HEX, "
            "downloaded once into ARTIFACT_ROOT/weights/. Required unless --model-version.",
        )
        parser.add_argument(
            "--model-config",
            type=Path,
            default=None,
            dest="model_config",
            help="JSON architecture (embed_dim, vision_cfg, text_cfg) instead of open_clip's "
            "config of --model.",
        )
        parser.add_argument(
            "--model-version",
            type=int,
            default=None,
            dest="model_version",
            help="Score the rest of the pool with an existing zero-shot version (resume).",
        )
        parser.add_argument(
            "--in-workers",
            action="store_true",
            dest="in_workers",
            help="Queue the scoring for the training workers in chunks of "
            "TRAINING_SCORE_CHUNK_SIZE items (the train queue) instead of scoring here; "
            "progress shows in the admin's model versions. Again with --model-version: sends "
            "the chunks not done, retries failed ones, adds chunks for new items.",
        )

    def handle(
        self,
        *args: Any,
        model: str,
        weights: str | None,
        model_config: Path | None,
        model_version: int | None,
        in_workers: bool = False,
        **options: Any,
    ) -> None:
        try:
            if model_version is not None:
                version = ModelVersion.objects.filter(
                    pk=model_version, kind=ModelVersion.Kind.ZERO_SHOT
                ).first()
                if version is None:
                    raise CommandError(f"no zero-shot model version {model_version}")
            else:
                if not weights:
                    raise CommandError("--weights is required (a file or URL#sha256=<hex>)")
                config = _read_config(model_config) if model_config else None
                version = zero_shot_version_create(model_name=model, weights=weights, config=config)
            if in_workers:
                queued = zero_shot_scoring_start(version=version)
                self.stdout.write(queued.summary())
                return
            with tqdm(total=0, unit="item", disable=None, file=self.stderr) as bar:

                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                result = zero_shot_pool_score(version=version, progress=progress)
        except ZeroShotServiceError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(result.summary())


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"unreadable model config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise CommandError(f"model config {path} is not a JSON object")
    return config
