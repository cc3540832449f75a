"""Allow-listed filters. Only the fields declared here can be filtered on; anything else in the
query string is ignored (never ``.filter(**request.GET)``, CVE-2023-47117). Numbers are bounded
so that no value reaches the database it cannot hold (B16)."""

from __future__ import annotations

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django_filters import rest_framework as filters

from annotate.models import AggregatedLabel, DatasetRelease, Item, Review
from annotate.selectors import CROWD_THRESHOLD

MAX_ID = 2**63 - 1


def _id_filter(field_name: str) -> filters.NumberFilter:
    return filters.NumberFilter(
        field_name=field_name, min_value=1, max_value=MAX_ID, decimal_places=0
    )


def _unit_filter(field_name: str, lookup: str) -> filters.NumberFilter:
    return filters.NumberFilter(field_name=field_name, lookup_expr=lookup, min_value=0, max_value=1)


def _crowd_has(key: str) -> Exists:
    return Exists(
        AggregatedLabel.objects.filter(
            item_id=OuterRef("pk"), concept__key=key, posterior__gt=CROWD_THRESHOLD
        )
    )


def _curated_has(key: str) -> Q:
    if connection.features.supports_json_field_contains:
        return Q(curated_concepts__contains=[key])
    # SQLite: the JSON text holds the key in quotes; keys are slugs, so this is exact enough.
    return Q(curated_concepts__icontains=f'"{key}"')


class ItemFilter(filters.FilterSet):
    concept = filters.CharFilter(
        method="filter_concept", max_length=64, label="final label includes this concept key"
    )
    aggregated_concept = filters.CharFilter(
        method="filter_aggregated_concept",
        max_length=64,
        label="the crowd's posterior for this concept key is above 0.5",
    )
    image_state = filters.ChoiceFilter(choices=Item.ImageState.choices)
    review_state = filters.ChoiceFilter(choices=Item.ReviewState.choices)
    consensus = filters.ChoiceFilter(choices=Item.Consensus.choices)
    contradicts_prior = filters.BooleanFilter()
    min_uncertainty = _unit_filter("uncertainty", "gte")
    max_uncertainty = _unit_filter("uncertainty", "lte")
    external_id = filters.CharFilter(max_length=255)

    class Meta:
        model = Item
        fields: list[str] = []

    def filter_concept(self, queryset: QuerySet[Item], name: str, value: str) -> QuerySet[Item]:
        curated = Q(review_state__in=Item.ReviewState.CURATED) & _curated_has(value)
        crowd = ~Q(review_state__in=Item.ReviewState.DECIDED) & _crowd_has(value)
        return queryset.filter(curated | crowd)

    def filter_aggregated_concept(
        self, queryset: QuerySet[Item], name: str, value: str
    ) -> QuerySet[Item]:
        return queryset.filter(_crowd_has(value))


class LabelFilter(filters.FilterSet):
    item = _id_filter("item_id")
    external_id = filters.CharFilter(field_name="item__external_id", max_length=255)
    concept = filters.CharFilter(field_name="concept__key", max_length=64)
    method = filters.CharFilter(max_length=32)
    min_posterior = _unit_filter("posterior", "gte")
    max_posterior = _unit_filter("posterior", "lte")

    class Meta:
        model = AggregatedLabel
        fields: list[str] = []


class ReviewFilter(filters.FilterSet):
    item = _id_filter("item_id")
    action = filters.ChoiceFilter(choices=Review.Action.choices)

    class Meta:
        model = Review
        fields: list[str] = []


class ReleaseFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=DatasetRelease.Status.choices)

    class Meta:
        model = DatasetRelease
        fields: list[str] = []
