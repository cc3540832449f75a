"""Events of the model side, for the pipeline above it (``loop.receivers``); each is sent once
its change has committed."""

from __future__ import annotations

from django.dispatch import Signal

#: A model version became the active one. kwargs: ``version_id``, ``previous_id`` (or None),
#: ``by`` ("training" when a run published it, else the user name).
model_version_promoted = Signal()

#: Every chunk of a version's pool scoring is done. kwargs: ``version_id``, ``failed`` (chunks).
pool_scored = Signal()
