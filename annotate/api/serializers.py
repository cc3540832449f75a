"""Output serializers of the read endpoints. Input serializers live inside the API class of the
operation that uses them (``views.py``)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from annotate.models import (
    AggregatedLabel,
    Concept,
    DatasetRelease,
    Item,
    Review,
    Round,
    Volunteer,
    VolunteerSkill,
)
from annotate.services.item_images import WEB_SCHEMES, item_image_src


class ConceptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Concept
        fields = ("id", "key", "label", "uri", "description", "position", "active")


class ItemSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField(
        help_text="The image's source URL (web URLs only; empty otherwise)."
    )
    image = serializers.SerializerMethodField(
        help_text="Absolute URL to show the image with: our stored copy once fetched, else the "
        "source URL; null when there is neither."
    )
    thumbnail = serializers.SerializerMethodField(
        help_text="Absolute URL of a small version: our stored thumbnail, else the image; null "
        "when there is neither."
    )
    final_labels = serializers.SerializerMethodField(
        help_text="Final concept keys (curator's, else the crowd's above 0.5); null if rejected."
    )

    class Meta:
        model = Item
        fields: tuple[str, ...] = (
            "id",
            "external_id",
            "title",
            "provider",
            "rights",
            "image_url",
            "image",
            "thumbnail",
            "image_state",
            "image_width",
            "image_height",
            "n_classifications",
            "consensus",
            "uncertainty",
            "contradicts_prior",
            "review_state",
            "final_labels",
            "created_at",
            "updated_at",
        )

    def get_image_url(self, item: Item) -> str:
        # Only web URLs: a javascript: or data: "URL" from a manifest is never handed on.
        return item.image_url if item.image_url.startswith(WEB_SCHEMES) else ""

    def get_image(self, item: Item) -> str | None:
        return self._absolute(item_image_src(item, large=True))

    def get_thumbnail(self, item: Item) -> str | None:
        return self._absolute(item_image_src(item))

    def _absolute(self, src: str) -> str | None:
        if not src:
            return None
        request = self.context.get("request")
        return request.build_absolute_uri(src) if request else src

    def get_final_labels(self, item: Item) -> list[str] | None:
        finals: dict[int, list[str]] = self.context.get("finals", {})
        return finals.get(item.pk)


class ItemLabelSerializer(serializers.ModelSerializer):
    concept: serializers.SlugRelatedField[Concept] = serializers.SlugRelatedField(
        slug_field="key", read_only=True
    )

    class Meta:
        model = AggregatedLabel
        fields = ("concept", "posterior", "votes_for", "votes_against", "method", "updated_at")


class ItemDetailSerializer(ItemSerializer):
    labels = ItemLabelSerializer(source="aggregated_labels", many=True, read_only=True)
    prior_labels = serializers.SerializerMethodField()

    class Meta(ItemSerializer.Meta):
        fields = (*ItemSerializer.Meta.fields, "metadata", "labels", "prior_labels")

    def get_prior_labels(self, item: Item) -> list[dict[str, str]]:
        return [{"concept": p.concept.key, "source": p.source} for p in item.prior_labels.all()]


class AggregatedLabelSerializer(serializers.ModelSerializer):
    item_external_id = serializers.CharField(source="item.external_id", read_only=True)
    concept: serializers.SlugRelatedField[Concept] = serializers.SlugRelatedField(
        slug_field="key", read_only=True
    )

    class Meta:
        model = AggregatedLabel
        fields = (
            "id",
            "item",
            "item_external_id",
            "concept",
            "posterior",
            "votes_for",
            "votes_against",
            "method",
            "updated_at",
        )


class ReviewSerializer(serializers.ModelSerializer):
    item_external_id = serializers.CharField(source="item.external_id", read_only=True)
    curator = serializers.CharField(source="curator.username", read_only=True)

    class Meta:
        model = Review
        fields = (
            "id",
            "item",
            "item_external_id",
            "curator",
            "action",
            "before",
            "after",
            "state_before",
            "state_after",
            "batch",
            "undoes",
            "comment",
            "created_at",
        )


class SkillSerializer(serializers.ModelSerializer):
    concept: serializers.SlugRelatedField[Concept] = serializers.SlugRelatedField(
        slug_field="key", read_only=True
    )

    class Meta:
        model = VolunteerSkill
        fields = ("concept", "sensitivity", "specificity", "n_votes")


class VolunteerSerializer(serializers.ModelSerializer):
    skills = SkillSerializer(many=True, read_only=True)

    class Meta:
        model = Volunteer
        fields = (
            "id",
            "key",
            "zooniverse_user_id",
            "user_name",
            "logged_in",
            "n_classifications",
            "skills",
        )


class RoundSerializer(serializers.ModelSerializer):
    workflow = serializers.IntegerField(
        source="workflow.zooniverse_id", read_only=True, default=None
    )
    n_subjects = serializers.IntegerField(read_only=True)

    class Meta:
        model = Round
        fields = (
            "id",
            "number",
            "name",
            "workflow",
            "strategy",
            "status",
            "subject_set_id",
            "notes",
            "n_subjects",
            "created_at",
            "pushed_at",
        )


class ReleaseSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="queued, running, succeeded, failed")
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    files = serializers.SerializerMethodField()
    downloads = serializers.SerializerMethodField()

    class Meta:
        model = DatasetRelease
        fields = (
            "id",
            "version",
            "kind",
            "status",
            "created_by",
            "note",
            "filters",
            "formats",
            "n_items",
            "counts",
            "split_counts",
            "lineage",
            "content_hash",
            "files",
            "downloads",
            "error",
            "created_at",
            "finished_at",
        )

    def get_files(self, release: DatasetRelease) -> list[dict[str, Any]]:
        return list((release.manifest or {}).get("files", []))

    def get_downloads(self, release: DatasetRelease) -> dict[str, str]:
        if release.status != DatasetRelease.Status.SUCCEEDED:
            return {}
        request = self.context.get("request")
        links = {}
        for what in [*release.formats, "manifest"]:
            path = reverse("api:release-download", kwargs={"pk": release.pk, "what": what})
            links[what] = request.build_absolute_uri(path) if request else path
        return links
