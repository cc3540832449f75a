"""Reads of the workbench: the crowd's side (``annotate.selectors``) joined with the model's
(``training.selectors``), for a page of the queue or one item.

A page of the queue costs a fixed number of queries whatever its length: the items, their final
labels (two), the active version and its predictions (two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from annotate import selectors as crowd
from annotate.models import Item
from annotate.services.item_images import item_image_src
from annotate.services.item_votes import item_votes
from training.models import ModelVersion
from training.selectors import (
    active_prediction_for_item,
    model_version_active,
    predictions_for_items,
)
from training.services.conflicts import concept_conflicts, crowd_confidence, model_confidence

#: Model concepts shown as tags in a queue row: those predicted (score at its threshold or above).
ROW_MODEL_TAGS = 6


@dataclass(frozen=True)
class ModelTag:
    key: str
    score: float


@dataclass(frozen=True)
class QueueRow:
    item: Item
    image: str
    large_image: str
    labels: list[str] | None  # the final label; None: rejected
    model: list[ModelTag]  # the concepts the active model predicts, most confident first


def queue_rows(items: list[Item], *, version: ModelVersion | None = None) -> list[QueueRow]:
    """One row per item of a queue page: its thumbnail, final label and the model's tags."""
    ids = [item.pk for item in items]
    labels = crowd.item_final_labels(ids)
    version = version if version is not None else model_version_active()
    scores = predictions_for_items(ids, version=version) if version is not None else {}
    rows = []
    for item in items:
        predicted = sorted(
            (s for s in scores.get(item.pk, []) if s.predicted),
            key=lambda s: -s.probability,
        )
        rows.append(
            QueueRow(
                item=item,
                image=item_image_src(item) or item_image_src(item, large=True),
                large_image=item_image_src(item, large=True) or item_image_src(item),
                labels=labels.get(item.pk),
                model=[ModelTag(s.key, s.probability) for s in predicted[:ROW_MODEL_TAGS]],
            )
        )
    return rows


@dataclass(frozen=True)
class WorkbenchRow:
    """One concept of the item screen: the crowd's row, the model's score, and the flags."""

    crowd: crowd.ConceptRow
    model: float | None  # None: the active version has not scored this item or concept
    predicted: bool
    conflicts_model: bool
    conflicts_prior: bool
    number: int = 0  # the row's place on the screen, from 1

    # What the screen prints, worked out here: the template's filters and tags cost more per row
    # than the rest of the page.
    @property
    def shortcut(self) -> str:
        """The key that toggles the row: 1-9, then 0 for the tenth; none after."""
        return str(self.number % 10) if 0 < self.number <= 10 else ""

    @property
    def voted(self) -> bool:
        return bool(self.crowd.votes_for or self.crowd.votes_against)

    @property
    def css_class(self) -> str:
        classes = []
        if self.crowd.final:
            classes.append("cl-final")
        if self.crowd.posterior is None and not self.crowd.prior:
            classes.append("cl-silent")
        if self.conflicts_model:
            classes.append("cl-conflict")
        return " ".join(classes)

    @property
    def posterior_text(self) -> str:
        return _two_places(self.crowd.posterior)

    @property
    def posterior_meter(self) -> str:
        return _meter_value(self.crowd.posterior)

    @property
    def model_text(self) -> str:
        return _two_places(self.model)

    @property
    def model_meter(self) -> str:
        return _meter_value(self.model)


def _two_places(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _meter_value(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@dataclass(frozen=True)
class Workbench:
    crowd: crowd.ItemReviewContext
    rows: list[WorkbenchRow]
    version: ModelVersion | None
    scored: bool  # the active version has a prediction for this item

    @property
    def has_model(self) -> bool:
        return self.version is not None and self.scored

    @property
    def explained(self) -> bool:
        """Evidence maps can be drawn: a scored item with a stored image."""
        return self.has_model and self.crowd.item.image_state == Item.ImageState.OK


def item_workbench(item: Item) -> Workbench:
    """Everything the item screen shows: per concept the crowd (with who voted), the prior, the
    active model's score, the model-vs-crowd and prior conflicts, and the final label."""
    context = crowd.item_review_context(item)
    version, item_scores = active_prediction_for_item(item.pk)
    scores = {s.key: s for s in item_scores}
    keys = [row.key for row in context.rows]
    model = np.array(
        [scores[k].probability if k in scores else np.nan for k in keys], dtype=np.float64
    )
    posterior = np.array(
        [row.posterior if row.posterior is not None else np.nan for row in context.rows],
        dtype=np.float64,
    )
    voted = np.array([row.votes_for + row.votes_against > 0 for row in context.rows], dtype=bool)
    conflicts = concept_conflicts(model, posterior, voted)
    c = crowd_confidence()
    rows = []
    for n, row in enumerate(context.rows):
        sure = row.posterior is not None and voted[n] and not (1 - c < row.posterior < c)
        rows.append(
            WorkbenchRow(
                crowd=row,
                model=scores[row.key].probability if row.key in scores else None,
                predicted=scores[row.key].predicted if row.key in scores else False,
                conflicts_model=bool(conflicts[n]),
                # ``sure`` holds only when the posterior is not None.
                conflicts_prior=bool(sure and (cast(float, row.posterior) > 0.5) != row.prior),
                number=n + 1,
            )
        )
    return Workbench(crowd=context, rows=rows, version=version, scored=bool(scores))


def item_votes_document(item: Item, *, volunteer_url, queue_url) -> dict:
    """Who voted what on ``item``, for the item screen's vote lists (fetched when a curator opens
    one): the voters once, then per concept key each vote as ``[voter index, ticked,
    sensitivity, specificity]`` (skills rounded to 3 places, null when not estimated yet).

    ``volunteer_url`` and ``queue_url`` map a volunteer id to their admin page and to the review
    queue of the items they classified.
    """
    votes, n_voters = item_votes(item)
    index: dict[int, int] = {}
    voters: list[dict] = []
    concepts: dict[str, list[list]] = {}
    for key, entries in votes.items():
        for vote in entries:
            if vote.volunteer_id not in index:
                index[vote.volunteer_id] = len(voters)
                voters.append({
                    "id": vote.volunteer_id,
                    "name": vote.name,
                    "excluded": vote.excluded,
                    "url": volunteer_url(vote.volunteer_id),
                    "items_url": queue_url(vote.volunteer_id),
                })  # fmt: skip
            concepts.setdefault(key, []).append([
                index[vote.volunteer_id],
                vote.ticked,
                None if vote.sensitivity is None else round(vote.sensitivity, 3),
                None if vote.specificity is None else round(vote.specificity, 3),
            ])  # fmt: skip
    return {"item": item.pk, "n_voters": n_voters, "voters": voters, "concepts": concepts}


def thresholds() -> dict[str, float]:
    """The confidences the flags use, for the screens' explanations."""
    return {"model": model_confidence(), "crowd": crowd_confidence()}
