from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ml.models import list_models
from training.models import TrainingRun
from training.services.params import TrainingParamsError
from training.services.runs import training_run_request

#: A run still queued this long after --wait began probably has no worker to serve it.
QUEUED_HINT_AFTER_S = 60.0


class Command(BaseCommand):
    help = (
        "Request a retrain from the final labels (one run at a time: a run already queued or "
        "running is shown instead). Without REDIS_URL the run trains right here; with it a "
        "worker on the 'train' queue takes it, and --wait follows it to the end."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backbone", choices=list_models(), default=None)
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument(
            "--weights", default=None, metavar="SPEC",
            help="Pretrained weights of the backbone: a torchvision weights name (IMAGENET1K_V2, "
            "DEFAULT...), fetched once into ARTIFACT_ROOT/weights; an http(s) URL ending in "
            "#sha256=<64 hex>; a local file path (optionally ending in #sha256=<hex>); or 'none'. "
            "Default: the backbone's entry in TRAINING_BACKBONE_WEIGHTS. Checked (and fetched) "
            "before the run is queued.",
        )
        parser.add_argument("--mode", choices=["head", "finetune"], default=None)
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        parser.add_argument("--timeout", type=float, default=24 * 3600,
                            help="Seconds --wait waits at most (default a day).")

    def handle(self, *args, backbone: str | None, epochs: int | None, mode: str | None,
               weights: str | None, wait: bool, timeout: float, **options) -> None:
        params = {k: v for k, v in (("backbone", backbone), ("epochs", epochs), ("mode", mode),
                                    ("weights", weights))
                  if v is not None}
        try:
            run, created = training_run_request(trigger=TrainingRun.Trigger.COMMAND, params=params,
                                                fetch_weights=True)
        except TrainingParamsError as exc:
            raise CommandError(str(exc)) from exc
        if run.enqueue_error:
            raise CommandError(run.enqueue_error)
        if not created:
            self.stderr.write(f"training run {run.pk} is already {run.status}: following it")
        if wait:
            run = self._follow(run, timeout=timeout, verbose=options["verbosity"] >= 1)
        run.refresh_from_db()
        version = getattr(run, "model_version", None)
        summary = (
            f"train: run {run.pk} {run.status}"
            + (f", attempt {run.attempts}/{run.max_attempts}" if run.attempts else "")
            + (f", model v{version.pk} {version.status} (val mAP {version.val_map:.3f})"
               if version is not None and version.val_map is not None else "")
        )
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"{summary}: {run.error}")
        self.stdout.write(summary)

    def _follow(self, run: TrainingRun, *, timeout: float, verbose: bool) -> TrainingRun:
        started = time.monotonic()
        deadline = started + timeout
        seen = -1
        hinted = False
        while True:
            run.refresh_from_db()
            if run.status == TrainingRun.Status.QUEUED and not hinted and (
                time.monotonic() - started > QUEUED_HINT_AFTER_S
            ):
                hinted = True
                self.stderr.write(
                    f"  training run {run.pk} is still queued after {QUEUED_HINT_AFTER_S:.0f} s: "
                    "is a worker serving the 'train' queue? (make worker, or make serve)"
                )
            if verbose and len(run.metrics) != seen:
                seen = len(run.metrics)
                row = run.metrics[-1] if run.metrics else {}
                self.stderr.write(
                    f"  {run.status} {run.progress:.0%}"
                    + (f" epoch {row.get('epoch')} val mAP {row.get('val_map')}" if row else "")
                )
            if run.is_finished:
                return run
            if time.monotonic() > deadline:
                raise CommandError(f"training run {run.pk} still {run.status} after {timeout} s")
            time.sleep(1.0)
