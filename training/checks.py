"""System checks of the model side: configuration problems found at `manage.py check`."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def artifact_root_writable(app_configs, **kwargs) -> list:
    """training.E001: checkpoints, snapshots and resume states need a writable ARTIFACT_ROOT."""
    root = Path(settings.ARTIFACT_ROOT)
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
    if not os.access(probe, os.W_OK):
        return [Error(f"ARTIFACT_ROOT {root} is not writable: training cannot save checkpoints.",
                      hint="Point ARTIFACT_ROOT at a writable folder outside MEDIA_ROOT.",
                      id="training.E001")]
    media = Path(settings.MEDIA_ROOT).resolve()
    if root.resolve().is_relative_to(media):
        return [Error("ARTIFACT_ROOT lies inside MEDIA_ROOT: checkpoints would be served.",
                      id="training.E002")]
    return []


@register()
def lease_below_visibility_timeout(app_configs, **kwargs) -> list:
    """training.W001: a lease longer than the visibility timeout lets Redis redeliver first."""
    from config.task_kinds import visibility_timeout

    visibility = visibility_timeout()
    lease = float(settings.TRAINING_LEASE_SECONDS)
    if lease >= visibility:
        return [Warning(f"TRAINING_LEASE_SECONDS ({lease:.0f}) is not below the broker's "
                        f"visibility timeout ({visibility:.0f}).", id="training.W001")]
    return []
