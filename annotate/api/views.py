"""API views: DRF generics for reads, one class (or action) per side-effecting operation with its
own nested input and output serializers. Each view's ``policy`` says who may do what."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet
from django.http import FileResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from annotate.api import filters
from annotate.api.pagination import UncountedPagination
from annotate.api.permissions import CanRead, CanRelease, CanReview, PolicyMixin
from annotate.api.serializers import (
    AggregatedLabelSerializer,
    ConceptSerializer,
    ItemDetailSerializer,
    ItemSerializer,
    ReleaseSerializer,
    ReviewSerializer,
    RoundSerializer,
    VolunteerSerializer,
)
from annotate.models import (
    AggregatedLabel,
    Concept,
    DatasetRelease,
    Item,
    PriorLabel,
    Review,
    Round,
    Volunteer,
    VolunteerSkill,
)
from annotate.roles import signed_in
from annotate.selectors import item_final_labels
from annotate.services.datasets.writers import FORMATS
from annotate.services.releases import CONTENT_TYPES

ID = r"[0-9]{1,19}"
READ = {"list": CanRead, "retrieve": CanRead}


class ReadOnlyViewSet(PolicyMixin, viewsets.ReadOnlyModelViewSet):
    policy = READ
    lookup_value_regex = ID


class ConceptViewSet(ReadOnlyViewSet):
    """The vocabulary, in its order."""

    queryset = Concept.objects.all()
    serializer_class = ConceptSerializer
    ordering_fields = ("position", "key", "id")
    ordering = ("position", "key")


class ItemViewSet(ReadOnlyViewSet):
    """Items with their crowd state and final label. Filter by concept (final label or the crowd's),
    image, review and consensus state, and uncertainty."""

    queryset = Item.objects.all()
    serializer_class = ItemSerializer
    filterset_class = filters.ItemFilter
    pagination_class = UncountedPagination  # no COUNT(*) per page over the whole catalogue
    ordering_fields = ("id", "uncertainty", "n_classifications", "created_at", "updated_at")
    ordering = ("id",)

    def get_queryset(self) -> QuerySet[Item]:
        if self.action == "retrieve":
            return Item.objects.prefetch_related(
                Prefetch(
                    "aggregated_labels",
                    AggregatedLabel.objects.select_related("concept").order_by("concept__position"),
                ),
                Prefetch("prior_labels", PriorLabel.objects.select_related("concept")),
            )
        return super().get_queryset()

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return ItemDetailSerializer if self.action == "retrieve" else ItemSerializer

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None, "UncountedPagination with a PAGE_SIZE always returns a page"
        finals = item_final_labels([item.pk for item in page])  # two queries for the page
        context = {**self.get_serializer_context(), "finals": finals}
        return self.get_paginated_response(ItemSerializer(page, many=True, context=context).data)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        item = self.get_object()
        context = {**self.get_serializer_context(), "finals": item_final_labels([item.pk])}
        return Response(ItemDetailSerializer(item, context=context).data)


class LabelViewSet(ReadOnlyViewSet):
    """The crowd's aggregated labels, one per item and concept."""

    queryset = AggregatedLabel.objects.select_related("item", "concept")
    serializer_class = AggregatedLabelSerializer
    filterset_class = filters.LabelFilter
    pagination_class = UncountedPagination  # items x concepts rows: never counted per page
    ordering_fields = ("id", "posterior", "updated_at")
    ordering = ("id",)


class VolunteerViewSet(ReadOnlyViewSet):
    """Volunteers with their skill per concept."""

    queryset = Volunteer.objects.prefetch_related(
        Prefetch("skills", VolunteerSkill.objects.select_related("concept"))
    )
    serializer_class = VolunteerSerializer
    ordering_fields = ("id", "n_classifications", "created_at")
    ordering = ("id",)


class RoundViewSet(ReadOnlyViewSet):
    """Rounds of items pushed to Zooniverse."""

    queryset = Round.objects.select_related("workflow").annotate(n_subjects=Count("subjects"))
    serializer_class = RoundSerializer
    ordering_fields = ("number", "created_at")
    ordering = ("-number",)


class ReviewViewSet(
    PolicyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The audit of curator decisions; curators add to it with POST, and undo one with
    ``POST /reviews/<id>/undo/`` (the undo is a new audit row; the decision stays)."""

    policy = {**READ, "create": CanReview, "undo": CanReview}
    lookup_value_regex = ID
    queryset = Review.objects.select_related("item", "curator")
    serializer_class = ReviewSerializer
    filterset_class = filters.ReviewFilter
    ordering_fields = ("id", "created_at")
    ordering = ("-created_at", "-id")

    @extend_schema_serializer(component_name="ReviewInput")
    class InputSerializer(serializers.Serializer):
        item = serializers.IntegerField(min_value=1, max_value=filters.MAX_ID)
        action = serializers.ChoiceField(
            choices=[(a, label) for a, label in Review.Action.choices if a != Review.Action.UNDO]
        )
        concepts = serializers.ListField(
            child=serializers.SlugField(max_length=64),
            required=False,
            allow_empty=True,
            max_length=200,
            help_text="The concept keys that apply (edit only; an empty list means none).",
        )
        comment = serializers.CharField(
            max_length=2000, required=False, allow_blank=True, default=""
        )

    @extend_schema(request=InputSerializer, responses={201: ReviewSerializer})
    def create(self, request: Request) -> Response:
        from annotate.services.review import review_record

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        item = Item.objects.filter(pk=data.validated_data["item"]).first()
        if item is None:
            raise serializers.ValidationError({"item": ["no such item"]})
        try:
            review = review_record(
                item=item,
                curator=signed_in(request.user),
                action=data.validated_data["action"],
                concepts=data.validated_data.get("concepts"),
                comment=data.validated_data["comment"],
            )
        except ValueError as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(ReviewSerializer(review).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: ReviewSerializer})
    @action(detail=True, methods=["post"])
    def undo(self, request: Request, pk: str | None = None) -> Response:
        """Undo this decision: the item goes back to its state and label before it. 400 with the
        reason when it cannot be undone (already undone, a later decision on the item, a skip)."""
        from annotate.services.review import UndoError, review_undo

        try:
            undo = review_undo(review=self.get_object(), curator=signed_in(request.user))
        except UndoError as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        return Response(ReviewSerializer(undo).data, status=status.HTTP_201_CREATED)


class ReleaseViewSet(
    PolicyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Dataset releases. POST starts a release build in the background (202); when it has
    succeeded, each format and the manifest download from ``download/<format>/``."""

    policy = {**READ, "create": CanRelease, "download": CanRead}
    lookup_value_regex = ID
    queryset = DatasetRelease.objects.select_related("created_by")
    serializer_class = ReleaseSerializer
    filterset_class = filters.ReleaseFilter
    ordering_fields = ("version", "created_at")
    ordering = ("-version",)

    @extend_schema_serializer(component_name="ReleaseInput")
    class InputSerializer(serializers.Serializer):
        reviewed_only = serializers.BooleanField(default=False)
        min_confidence = serializers.FloatField(
            min_value=0.5, max_value=1.0, required=False, allow_null=True, default=None
        )
        concepts = serializers.ListField(
            child=serializers.SlugField(max_length=64), required=False, max_length=500
        )
        formats = serializers.ListField(
            child=serializers.ChoiceField(choices=FORMATS), required=False, max_length=4
        )
        note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
        kind = serializers.ChoiceField(
            choices=DatasetRelease.Kind.choices,
            default=DatasetRelease.Kind.LABELS,
            help_text="labels: the final labels; proposals: the active model's machine-generated "
            "labels for items that have none.",
        )

    @extend_schema(request=InputSerializer, responses={202: ReleaseSerializer})
    def create(self, request: Request) -> Response:
        from annotate.services.releases import release_request

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            release = release_request(user=signed_in(request.user), **data.validated_data)
        except ValueError as exc:
            raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from exc
        release.refresh_from_db()
        context = self.get_serializer_context()
        return Response(ReleaseSerializer(release, context=context).data, status=202)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "what",
                location=OpenApiParameter.PATH,
                enum=list(CONTENT_TYPES),
                description="A format of the release, or its manifest.",
            )
        ],
        responses={(200, "application/octet-stream"): OpenApiResponse(description="the file")},
    )
    @action(detail=True, methods=["get"], url_path=r"download/(?P<what>[a-z]{1,16})")
    def download(self, request: Request, pk: str, what: str) -> FileResponse:
        """Download one file of a written release, as an attachment."""
        from annotate.views import release_file_response

        release = self.get_object()
        try:
            return release_file_response(release, what)
        except FileNotFoundError as exc:
            raise NotFound(str(exc)) from exc
