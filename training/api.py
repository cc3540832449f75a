"""REST endpoints of the model side: request a training run, list runs, read one."""

from __future__ import annotations

from rest_framework import generics, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from training.models import TrainingRun
from training.services import TrainingParamsError, training_run_request


class CanTrain(BasePermission):
    """Staff with the training permission may request runs; those who may view runs read."""

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        perm = "training.view_trainingrun" if request.method in ("GET", "HEAD", "OPTIONS") else (
            "training.add_trainingrun")
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm(perm))


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "status", "trigger", "params", "progress", "metrics", "attempts",
            "max_attempts", "followup_requested", "enqueue_error", "error", "n_items",
            "created_at", "started_at", "finished_at", "model_version",
        ]

    def get_model_version(self, run: TrainingRun) -> dict | None:
        version = getattr(run, "model_version", None)
        if version is None:
            return None
        return {"id": version.pk, "status": version.status, "val_map": version.val_map}


class TrainingRunListCreateApi(generics.ListAPIView):
    """GET: runs, newest first. POST: request a retrain; a run in flight is returned instead.

    POST answers 201 with the new run, 200 with the run already queued or running, 400 on bad
    parameters, and 503 (with the run, left queued) when the task queue is unreachable.
    """

    permission_classes = [CanTrain]
    serializer_class = TrainingRunOutputSerializer
    queryset = TrainingRun.objects.select_related("model_version").order_by("-created_at", "-id")

    class InputSerializer(serializers.Serializer):
        backbone = serializers.CharField(
            required=False, max_length=64, help_text="A registered model name, e.g. small_cnn."
        )
        epochs = serializers.IntegerField(min_value=1, max_value=1000, required=False)
        mode = serializers.ChoiceField(choices=["head", "finetune"], required=False)

        def validate_backbone(self, value: str) -> str:
            # The registry lives with the models (PyTorch); importing it here rather than at
            # module level keeps torch out of every process that merely loads the URLconf.
            from ml.models import list_models

            if value not in list_models():
                raise serializers.ValidationError(f"not one of {', '.join(list_models())}")
            return value

    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run, created = training_run_request(
                requested_by=request.user, trigger=TrainingRun.Trigger.API,
                params=dict(data.validated_data),
            )
        except TrainingParamsError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        body = {"created": created, "run": TrainingRunOutputSerializer(run).data}
        if run.enqueue_error:
            body["detail"] = run.enqueue_error
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": "60"})
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TrainingRunDetailApi(generics.RetrieveAPIView):
    permission_classes = [CanTrain]
    serializer_class = TrainingRunOutputSerializer
    queryset = TrainingRun.objects.select_related("model_version")
