"""REST endpoints of the model side: request a training run, list runs, read one; request the
next round (``select_round`` as a background task), list those requests, read one; list and read
model versions. Scoring one image is ``training.api_predict``."""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import roles
from annotate.api.permissions import CanRead, CanRunRounds, HasPermission, PolicyMixin
from annotate.api.views import ReadOnlyViewSet
from ml.acquisition import list_strategies
from ml.model_names import MODEL_NAMES
from training.models import ModelVersion, RoundRequest, TrainingRun
from training.services.params import TrainingParamsError
from training.services.proposals import (
    ANNOTATION_MEDIA_TYPE,
    proposal_collection,
    proposal_page,
)
from training.services.runs import training_run_request


class CanViewTrainingRuns(HasPermission):
    """Read training runs (viewer, curator, staff, admin)."""

    perm = roles.PERM_VIEW_TRAINING


class CanRequestTraining(HasPermission):
    """Request a training run (staff, admin)."""

    perm = roles.PERM_RETRAIN


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "trigger",
            "params",
            "progress",
            "metrics",
            "attempts",
            "max_attempts",
            "followup_requested",
            "enqueue_error",
            "error",
            "n_items",
            "created_at",
            "started_at",
            "finished_at",
            "model_version",
        ]
        read_only_fields = fields  # output only: a run is requested with InputSerializer

    def get_model_version(self, run: TrainingRun) -> dict | None:
        version = getattr(run, "model_version", None)
        if version is None:
            return None
        return {"id": version.pk, "status": version.status, "val_map": version.val_map}


class TrainingRunListCreateApi(PolicyMixin, generics.ListAPIView):
    """GET: runs, newest first. POST: request a retrain; a run in flight is returned instead.

    POST answers 201 with the new run, 200 with the run already queued or running, 400 on bad
    parameters, and 503 (with the run, left queued) when the task queue is unreachable.
    """

    policy = {"get": CanViewTrainingRuns, "post": CanRequestTraining}
    serializer_class = TrainingRunOutputSerializer
    queryset = TrainingRun.objects.select_related("model_version").order_by("-created_at", "-id")

    @extend_schema_serializer(component_name="TrainingRunInput")
    class InputSerializer(serializers.Serializer):
        # Every field may be left empty (null, or "" for text): empty means the default, so the
        # browsable API's form posts as it is shown.
        backbone = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=64,
            help_text="A registered model name, e.g. small_cnn (default TRAINING_BACKBONE).",
        )
        epochs = serializers.IntegerField(
            min_value=1,
            max_value=1000,
            required=False,
            allow_null=True,
            help_text="At most this many epochs (default TRAINING_EPOCHS).",
        )
        mode = serializers.ChoiceField(
            choices=["head", "finetune"],
            required=False,
            allow_blank=True,
            initial="",
            help_text="Default: head when the backbone has pretrained weights, else finetune.",
        )
        dropout = serializers.FloatField(
            min_value=0.0,
            max_value=0.95,
            required=False,
            allow_null=True,
            help_text="Dropout before the head's layers; above 0, BALD samples the head (MC "
            "dropout). Default 0.2.",
        )

        def validate_backbone(self, value: str) -> str:
            # The registry's names without the registry: ml.models would load PyTorch here.
            if value and value not in MODEL_NAMES:
                raise serializers.ValidationError(f"not one of {', '.join(MODEL_NAMES)}")
            return value

    @extend_schema_serializer(component_name="TrainingRunRequested")
    class OutputSerializer(serializers.Serializer):
        created = serializers.BooleanField(help_text="False: the run already in flight.")
        run = TrainingRunOutputSerializer()
        detail = serializers.CharField(
            required=False, help_text="Why the run is left queued (503 only)."
        )

    def get_serializer_class(self) -> type[serializers.Serializer]:
        # The browsable API's form is built from this serializer: the request's fields on POST.
        return self.InputSerializer if self.request.method == "POST" else self.serializer_class

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 201: OutputSerializer, 503: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = {k: v for k, v in data.validated_data.items() if v is not None and v != ""}
        try:
            run, created = training_run_request(
                requested_by=request.user, trigger=TrainingRun.Trigger.API, params=params
            )
        except TrainingParamsError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        body = {"created": created, "run": run}
        if run.enqueue_error:
            body["detail"] = run.enqueue_error
            return Response(
                self.OutputSerializer(body).data,
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "60"},
            )
        return Response(
            self.OutputSerializer(body).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class TrainingRunDetailApi(PolicyMixin, generics.RetrieveAPIView):
    """One training run: its state, progress, metrics per epoch and the model version it made."""

    policy = {"get": CanViewTrainingRuns}
    serializer_class = TrainingRunOutputSerializer
    queryset = TrainingRun.objects.select_related("model_version")


@extend_schema_serializer(component_name="RoundRequest")
class RoundRequestOutputSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, default=None
    )
    round = serializers.SerializerMethodField()

    class Meta:
        model = RoundRequest
        fields = [
            "id",
            "status",
            "params",
            "round",
            "summary",
            "error",
            "attempts",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields  # output only: a round is asked for with InputSerializer

    def get_round(self, request: RoundRequest) -> dict | None:
        round_ = request.round
        if round_ is None:
            return None
        return {
            "id": round_.pk,
            "number": round_.number,
            "name": round_.name,
            "strategy": round_.strategy,
            "status": round_.status,
        }


class RoundRequestListCreateApi(PolicyMixin, generics.ListAPIView):
    """GET: requests for rounds, newest first. POST: choose the next round in the background.

    POST answers 202 with the request; it is served by a task on the train queue (the model
    scores a shortlist of the pool), and the request shows the round once it is chosen, or the
    reason it could not be. Bad parameters answer 400 naming the field.
    """

    policy = {"get": CanRead, "post": CanRunRounds}
    serializer_class = RoundRequestOutputSerializer
    queryset = RoundRequest.objects.select_related("round", "requested_by")

    @extend_schema_serializer(component_name="RoundRequestInput")
    class InputSerializer(serializers.Serializer):
        size = serializers.IntegerField(
            min_value=1,
            max_value=10_000,
            initial=lambda: settings.ROUND_NEXT_SIZE,  # what the browsable form offers
            help_text="How many items the round holds (the loop's own rounds: ROUND_NEXT_SIZE).",
        )
        strategy = serializers.ChoiceField(
            choices=list_strategies(),
            required=False,
            allow_null=True,
            default=None,
            help_text="Default: ACQUISITION_STRATEGY. A cold start when no model is scored yet.",
        )
        random_share = serializers.FloatField(
            min_value=0.0,
            max_value=1.0,
            required=False,
            allow_null=True,
            default=None,
            help_text="The random control share (default ACQUISITION_RANDOM_SHARE).",
        )
        relabel = serializers.BooleanField(
            required=False,
            allow_null=True,
            default=None,
            help_text="Let contested, already classified items compete for places "
            "(default ACQUISITION_RELABEL, off).",
        )
        seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0, initial=0)
        push = serializers.BooleanField(
            default=False, help_text="Push the round to Zooniverse once chosen."
        )
        model_version = serializers.IntegerField(
            min_value=1,
            required=False,
            allow_null=True,
            default=None,
            help_text="Whose predictions choose the round (default: the active version).",
        )

    def get_serializer_class(self) -> type[serializers.Serializer]:
        # The browsable API's form is built from this serializer: the request's fields on POST.
        return self.InputSerializer if self.request.method == "POST" else self.serializer_class

    @extend_schema(request=InputSerializer, responses={202: RoundRequestOutputSerializer})
    def post(self, request: Request) -> Response:
        from training.services.round_requests import RoundRequestError, round_request_create

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        try:
            made = round_request_create(
                user=request.user, model_version_id=values.pop("model_version"), **values
            )
        except RoundRequestError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from exc
        made.refresh_from_db()
        return Response(RoundRequestOutputSerializer(made).data, status=status.HTTP_202_ACCEPTED)


class RoundRequestDetailApi(PolicyMixin, generics.RetrieveAPIView):
    """One request for a round: its state, and the round once chosen."""

    policy = {"get": CanRead}
    serializer_class = RoundRequestOutputSerializer
    queryset = RoundRequest.objects.select_related("round", "requested_by")


# --- model versions -------------------------------------------------------------------------------


class ModelVersionSerializer(serializers.Serializer):
    """A trained model version as the training app records it (no server paths)."""

    id = serializers.IntegerField(read_only=True)
    family = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)
    backbone = serializers.CharField(read_only=True)
    mode = serializers.CharField(read_only=True)
    concepts = serializers.ListField(child=serializers.CharField(), read_only=True)
    thresholds = serializers.ListField(child=serializers.FloatField(), read_only=True)
    metrics = serializers.DictField(read_only=True)
    val_map = serializers.FloatField(read_only=True, allow_null=True)
    gate = serializers.DictField(
        read_only=True,
        help_text="The promotion gate: this version and the version active then, scored on the "
        "same validation items (items, candidate_map, active_map, active_version, concepts), or "
        "the fallback rule and its reason.",
    )
    n_train = serializers.IntegerField(read_only=True)
    n_val = serializers.IntegerField(read_only=True)
    training_run = serializers.IntegerField(
        source="training_run_id", read_only=True, allow_null=True
    )
    checkpoint_sha256 = serializers.CharField(read_only=True)
    scoring_chunks = serializers.IntegerField(read_only=True)
    scoring_chunks_done = serializers.IntegerField(read_only=True)
    scored_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    promoted_at = serializers.DateTimeField(read_only=True, allow_null=True)


class AnnotationRenderer(JSONRenderer):
    """JSON-LD with the Web Annotation profile, the one representation of proposals."""

    media_type = ANNOTATION_MEDIA_TYPE
    format = "jsonld"


class _OnlyRepresentation(BaseContentNegotiation):
    """The collection has one representation: serve it whatever ``Accept`` asks for."""

    # DRF passes the view's lists (APIView.get_parsers/get_renderers); the stubs say Iterable.
    def select_parser(  # type: ignore[override]  # a list, indexed here
        self, request: Request, parsers: list[BaseParser]
    ) -> BaseParser | None:
        return parsers[0] if parsers else None

    def select_renderer(  # type: ignore[override]  # a list, indexed here
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class ProposalCollectionApi(PolicyMixin, APIView):
    """The active model's enrichment proposals for items with no final label, as a W3C Web
    Annotation ``AnnotationCollection``: without ``page``, the collection (``total``, links to the
    ``first`` and ``last`` pages); with ``?page=N``, an ``AnnotationPage`` (``partOf``,
    ``startIndex``, ``prev``, ``next``, ``items``). The ``prev`` and ``next`` links add a cursor
    (``after`` or ``before``) that makes following them cheap and exact; the page's ``id`` is
    its number's URL. Each annotation tags an item (``target``)
    with a concept URI (``body``), carries the model's score as ``confidence`` and names the
    model version as ``generator``. Served as ``application/ld+json`` with the Web Annotation
    profile."""

    policy = {"get": CanRead}
    renderer_classes = [AnnotationRenderer]
    content_negotiation_class = _OnlyRepresentation

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="A page, from 1."),
            OpenApiParameter("after", str, description="The cursor of a page's next link."),
            OpenApiParameter("before", str, description="The cursor of a page's prev link."),
        ],
        responses={
            (200, ANNOTATION_MEDIA_TYPE): OpenApiResponse(
                description="An AnnotationCollection, or one of its AnnotationPages."
            )
        },
    )
    def get(self, request: Request) -> Response:
        collection_url = request.build_absolute_uri(reverse("api-proposals"))
        raw = request.query_params.get("page")
        if raw is None:
            return Response(proposal_collection(collection_url=collection_url))
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1_000_000):
            raise NotFound("no such page")
        version_url = request.build_absolute_uri(
            reverse("api-model-version-detail", args=[0])
        ).replace("/0/", "/{id}/")
        page = proposal_page(
            number=int(raw),
            collection_url=collection_url,
            version_url=version_url,
            after=request.query_params.get("after"),
            before=request.query_params.get("before"),
        )
        if page is None:
            raise NotFound("no such page")
        return Response(page)


class ModelVersionFilter(filters.FilterSet):
    # Plain text, not a choice list: unknown states match nothing rather than answering 400.
    status = filters.CharFilter(max_length=12)
    family = filters.CharFilter(max_length=64)


class ModelVersionViewSet(ReadOnlyViewSet):
    """Trained model versions (candidate, active, archived), newest first. Read-only: training and
    promotion are the training app's (``/api/v1/training-runs/``)."""

    serializer_class = ModelVersionSerializer
    ordering_fields = ("id", "created_at", "val_map")
    ordering = ("-created_at", "-id")
    filterset_class = ModelVersionFilter

    def get_queryset(self) -> QuerySet:
        return ModelVersion.objects.all()
