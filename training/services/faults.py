"""Fault injection for the real-worker tests (reliability F3, F4): off unless asked for.

``CROWDLOOP_TRAINING_FAULTS`` in a worker's environment, e.g. ``sleep_per_epoch=1.5`` (slow
epochs, so that a test can kill the worker between two of them) or ``exit_at_epoch=1`` (the
process dies after that epoch's checkpoint, as an out-of-memory kill would). Refused in
production: a stray variable there must not kill workers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)

ENV = "CROWDLOOP_TRAINING_FAULTS"


@dataclass(frozen=True)
class Faults:
    sleep_per_epoch: float = 0.0
    exit_at_epoch: int = 0

    def epoch_done(self, epoch: int) -> None:
        """Called after each epoch's checkpoint is written and recorded."""
        if self.sleep_per_epoch:
            time.sleep(self.sleep_per_epoch)
        if self.exit_at_epoch and epoch >= self.exit_at_epoch:
            logger.error("fault injection: exiting after epoch %d", epoch)
            os._exit(137)


def faults_from_env() -> Faults:
    raw = os.environ.get(ENV, "").strip()
    if not raw or getattr(settings, "PRODUCTION", False):
        return Faults()
    options: dict[str, str] = dict(
        part.split("=", 1) for part in raw.split(",") if "=" in part
    )
    return Faults(
        sleep_per_epoch=float(options.get("sleep_per_epoch", 0) or 0),
        exit_at_epoch=int(options.get("exit_at_epoch", 0) or 0),
    )
