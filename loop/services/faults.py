"""Fault injection for the real-worker tests of the loop: off unless asked for.

``CROWDLOOP_LOOP_FAULTS`` in a worker's environment, e.g. ``sleep_in_aggregate=20`` (the step
sleeps after its claim, before its work, so that a test can kill the worker mid-step). Refused in
production: a stray variable there must not slow the loop.
"""

from __future__ import annotations

import logging
import os
import time

from django.conf import settings

logger = logging.getLogger(__name__)

ENV = "CROWDLOOP_LOOP_FAULTS"


def step_started(name: str) -> None:
    """Called by a step's task once it holds the claim."""
    raw = os.environ.get(ENV, "").strip()
    if not raw or settings.PRODUCTION:
        return
    options = dict(part.split("=", 1) for part in raw.split(",") if "=" in part)
    seconds = float(options.get(f"sleep_in_{name}", 0) or 0)
    if seconds:
        logger.warning("fault injection: %s sleeps %.1f s", name, seconds)
        time.sleep(seconds)
