"""Builders for the rows most tests need, so a test states only what it is about: factory_boy
factories for concepts, items, workflows with their version, subjects, volunteers and
classifications; and builders writing straight to the tables as the services that own them would
(votes for aggregation, crowd labels, scored model versions)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import factory
import numpy as np
from factory.django import DjangoModelFactory

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    Item,
    PriorLabel,
    Subject,
    Volunteer,
    Workflow,
    WorkflowVersion,
)

#: When a Crowd's first vote is cast; each later one comes a minute after the one before.
CROWD_T0 = datetime(2026, 3, 1, tzinfo=UTC)

#: The answers of a WorkflowFactory version's task unless given: each the key of a pilot concept.
WORKFLOW_ANSWERS = ["painting", "drawing", "map", "photograph"]


def answers_for(keys) -> list[dict[str, str]]:
    """A version's answers for concept ``keys``: labelled with the key in title case, each
    mapped to its concept as a workflow export or a sync would store it."""
    return [{"label": key.title(), "concept": key} for key in keys]


class ConceptFactory(DjangoModelFactory):
    class Meta:
        model = Concept

    key = factory.Sequence(lambda n: f"concept-{n}")
    label = factory.LazyAttribute(lambda o: o.key.replace("-", " ").capitalize())
    position = factory.Sequence(lambda n: 1000 + n)


class ItemFactory(DjangoModelFactory):
    class Meta:
        model = Item

    external_id = factory.Sequence(lambda n: f"factory/item-{n}")


class WorkflowVersionFactory(DjangoModelFactory):
    """A version of a workflow whose task offers the four ``WORKFLOW_ANSWERS``."""

    class Meta:
        model = WorkflowVersion

    workflow = factory.SubFactory("tests.factories.WorkflowFactory", version=None)
    version = "3.1"
    task_key = factory.SelfAttribute("workflow.task_key")
    task_type = factory.SelfAttribute("workflow.task_type")
    answers = factory.LazyFunction(lambda: answers_for(WORKFLOW_ANSWERS))


class WorkflowFactory(DjangoModelFactory):
    """A workflow with one version, "3.1", of the same task: ``answers`` (the four
    ``WORKFLOW_ANSWERS`` unless given) for ``task_key`` T0 as a multiple-answer question.
    ``version=None`` gives a workflow with no version, as one is before its first sync;
    ``first_version__<field>`` sets a field of the version alone (e.g. its ``task_type``)."""

    class Meta:
        model = Workflow
        skip_postgeneration_save = True

    class Params:
        version = "3.1"
        answers = factory.LazyFunction(lambda: answers_for(WORKFLOW_ANSWERS))

    zooniverse_id = factory.Sequence(lambda n: 1_000_000 + n)
    task_key = "T0"
    task_type = "multiple"
    first_version = factory.Maybe(
        "version",
        factory.RelatedFactory(
            WorkflowVersionFactory,
            factory_related_name="workflow",
            version=factory.SelfAttribute("..version"),
            answers=factory.SelfAttribute("..answers"),
        ),
    )


class SubjectFactory(DjangoModelFactory):
    class Meta:
        model = Subject

    zooniverse_id = factory.Sequence(lambda n: 5_000_000 + n)
    item = factory.SubFactory(ItemFactory)


class VolunteerFactory(DjangoModelFactory):
    """A logged-in volunteer named by its key."""

    class Meta:
        model = Volunteer

    key = factory.Sequence(lambda n: f"volunteer-{n}")
    user_name = factory.SelfAttribute("key")


class ClassificationFactory(DjangoModelFactory):
    """A vote ticking nothing on a subject of its own, in a workflow's version 3.1, each cast a
    minute after the one before."""

    class Meta:
        model = Classification

    zooniverse_id = factory.Sequence(lambda n: 9_000_000 + n)
    workflow = factory.SubFactory(WorkflowFactory)
    workflow_version = "3.1"
    subject = factory.SubFactory(SubjectFactory)
    item = factory.SelfAttribute("subject.item")
    volunteer = factory.SubFactory(VolunteerFactory)
    created_at = factory.Sequence(lambda n: CROWD_T0 + timedelta(minutes=n))
    concept_ids = factory.LazyFunction(list)


class Crowd:
    """Builds items with one subject each and classifications straight in the database: votes
    for the real aggregation to read. Volunteers whose key starts with "anon" are logged out."""

    def __init__(self, concepts: Mapping[str, Concept]) -> None:
        self.concepts = concepts
        self.workflow = WorkflowFactory(zooniverse_id=1, version=None)
        self.next_id = 1

    def item(self, external_id: str, prior: list[str] | tuple[str, ...] = ()) -> Item:
        item = ItemFactory(external_id=external_id)
        SubjectFactory(zooniverse_id=10_000 + item.pk, item=item)
        for key in prior:
            PriorLabel.objects.create(item=item, concept=self.concepts[key])
        return item

    def vote(
        self, item: Item, volunteer: str, ticked: list[str], workflow_version="1.1", **extra
    ) -> Classification:
        volunteer_row, _ = Volunteer.objects.get_or_create(
            key=volunteer,
            defaults={"user_name": volunteer, "logged_in": not volunteer.startswith("anon")},
        )
        self.next_id += 1
        return ClassificationFactory(
            zooniverse_id=self.next_id,
            workflow=self.workflow,
            workflow_version=workflow_version,
            subject=item.subjects.get(),
            item=item,
            volunteer=volunteer_row,
            created_at=CROWD_T0 + timedelta(minutes=self.next_id),
            concept_ids=[self.concepts[k].pk for k in ticked],
            **extra,
        )


def item_with_labels(
    concepts: Mapping[str, Concept],
    external_id: str,
    posteriors: dict[str, float] | None = None,
    *,
    votes: int = 5,
    uncertainty: float | None = None,
    contradicts_prior: bool = False,
    priors: tuple[str, ...] = (),
    consensus: str | None = None,
    **fields,
) -> Item:
    """An item with crowd labels as the aggregation would write them.

    Consensus is "uncertain" for an item with posteriors unless given, "none" without.
    """
    posteriors = posteriors or {}
    if uncertainty is None:
        uncertainty = max((1 - abs(2 * p - 1) for p in posteriors.values()), default=0.0)
    item = ItemFactory(
        external_id=external_id,
        n_classifications=votes if posteriors else 0,
        consensus=consensus or ("uncertain" if posteriors else "none"),
        uncertainty=uncertainty,
        contradicts_prior=contradicts_prior,
        **fields,
    )
    AggregatedLabel.objects.bulk_create(
        AggregatedLabel(
            item=item,
            concept=concepts[key],
            posterior=p,
            votes_for=round(p * votes),
            votes_against=votes - round(p * votes),
            method="test",
        )
        for key, p in posteriors.items()
    )
    PriorLabel.objects.bulk_create(PriorLabel(item=item, concept=concepts[key]) for key in priors)
    return item


def model_version_with_scores(
    scores: Mapping[int, Mapping[str, float]],
    *,
    concepts: list[str],
    status: str = "active",
    val_map: float | None = 0.6,
):
    """A model version (active by default) with stored predictions ``{item_id: {key: score}}``;
    concepts missing from an item's scores get 0.5."""
    from training.models import ModelVersion

    version = ModelVersion.objects.create(
        status=status,
        backbone="small_cnn",
        concepts=list(concepts),
        thresholds=[0.5] * len(concepts),
        checkpoint_path="checkpoints/test.pt",
        checkpoint_sha256="a" * 64,
        val_map=val_map,
    )
    predictions_store(version, scores)
    return version


def model_version_checkpoint(
    *, concepts: list[str], seed: int = 0, active: bool = True, val_map: float | None = None
):
    """A tiny untrained small CNN saved as a verified checkpoint under ARTIFACT_ROOT and
    registered as a version (active by default): enough for Grad-CAM maps and scoring plumbing,
    whose content is tested in tests/ml."""
    from pathlib import Path

    import torch
    from django.conf import settings

    from ml.checkpoint import save_checkpoint
    from ml.models import create_model
    from training.models import ModelVersion

    torch.manual_seed(seed)
    model = create_model("small_cnn", len(concepts), widths=[4, 8], input_size=16)
    relative = f"models/test-{ModelVersion.objects.count() + 1}-{seed}/model.json"
    saved = save_checkpoint(
        Path(settings.ARTIFACT_ROOT) / relative,
        model,
        config={},
        concepts=list(concepts),
        thresholds=[0.5] * len(concepts),
    )
    if active:
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).update(
            status=ModelVersion.Status.ARCHIVED
        )
    return ModelVersion.objects.create(
        backbone="small_cnn",
        concepts=list(concepts),
        checkpoint_path=relative,
        checkpoint_sha256=saved.sha256,
        val_map=val_map,
        status=ModelVersion.Status.ACTIVE if active else ModelVersion.Status.CANDIDATE,
    )


def predictions_store(version, scores: Mapping[int, Mapping[str, float]]) -> None:
    """Predictions ``{item_id: {key: score}}`` for ``version``, as pool scoring stores them;
    concepts missing from an item's scores get 0.5."""
    from training.models import Prediction

    rows = []
    for item_id, by_key in scores.items():
        probs = np.array([by_key.get(key, 0.5) for key in version.concepts], dtype=np.float32)
        rows.append(
            Prediction(
                model_version=version,
                item_id=item_id,
                scores=Prediction.pack(probs),
                uncertainty=float((1 - np.abs(2 * probs - 1)).max()),
            )
        )
    Prediction.objects.bulk_create(rows)
