"""Admin for the model side: runs with live progress, versions with metrics and promotion."""

from __future__ import annotations

import math

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from annotate.admin.common import confirmation_page, shortened, when
from training.models import ModelVersion, RoundRequest, TrainingRun
from training.services.gate import SAME_ITEMS, gate_describe
from training.services.params import TrainingParamsError
from training.services.runs import training_run_request
from training.services.versions import (
    PromotionError,
    PromotionNeedsConfirmation,
    model_version_promote,
)


def _map(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _comparison_line(version: ModelVersion, active: ModelVersion, gate: dict) -> str:
    if gate.get("rule") == SAME_ITEMS:
        return (
            f"On the same {gate.get('items')} validation items, v{version.pk} has an mAP of "
            f"{_map(gate.get('candidate_map'))}; the active v{active.pk} has "
            f"{_map(gate.get('active_map'))}."
        )
    return (
        f"v{version.pk} has a validation mAP of {_map(version.val_map)}; the active "
        f"v{active.pk} has {_map(active.val_map)}, each on its own validation split."
    )


#: Failed scoring chunks listed on a version's page.
SHOWN_FAILURES = 10


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.0%}"


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    change_list_template = "training/admin/run_change_list.html"
    change_form_template = "training/admin/run_change_form.html"
    # Narrow columns, so the list fits 1,400 px beside its filters; attempts are on the page.
    list_display = [
        "id",
        "status",
        "trigger",
        "progress_bar",
        "version_link",
        "requested_by_short",
        "created",
        "finished",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["requested_by", "model_version"]
    ordering = ["-created_at", "-id"]
    readonly_fields = [
        "status",
        "trigger",
        "requested_by",
        "params",
        "progress_percent",
        "attempts",
        "max_attempts",
        "worker_id",
        "lease_until",
        "heartbeat_at",
        "enqueued_at",
        "enqueue_error",
        "followup_requested",
        "n_items",
        "snapshot_path",
        "snapshot_sha256",
        "weights",
        "weights_sha256",
        "error",
        "log",
        "created_at",
        "started_at",
        "finished_at",
    ]
    exclude = ["metrics", "state_sha256", "family", "progress"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs are requested with the "Retrain now" button, which goes through the service.
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="progress")
    def progress_bar(self, run: TrainingRun) -> str:
        return format_html(
            '<progress max="100" value="{}" title="{}%" style="width:6em"></progress>',
            round(run.progress * 100),
            round(run.progress * 100),
        )

    @admin.display(description="requested by", ordering="requested_by__username")
    def requested_by_short(self, run: TrainingRun) -> str:
        return shortened(run.requested_by.get_username(), 16) if run.requested_by else "–"

    @admin.display(description="created", ordering="created_at")
    def created(self, run: TrainingRun) -> str:
        return when(run.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, run: TrainingRun) -> str:
        return when(run.finished_at)

    @admin.display(description="progress")
    def progress_percent(self, run: TrainingRun) -> str:
        return _percent(run.progress)

    @admin.display(description="model version")
    def version_link(self, run: TrainingRun) -> str:
        version = getattr(run, "model_version", None)
        if version is None:
            return "–"
        url = reverse("admin:training_modelversion_change", args=[version.pk])
        return format_html('<a href="{}">v{} ({})</a>', url, version.pk, version.status)

    def get_urls(self):
        urls = super().get_urls()
        return [
            path(
                "retrain/",
                self.admin_site.admin_view(self.retrain_view),
                name="training_trainingrun_retrain",
            ),
            *urls,
        ]

    def retrain_view(self, request: HttpRequest) -> HttpResponse:
        """The "Retrain now" button: POST only, staff with the training permission only."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (request.user.is_staff and request.user.has_perm("training.add_trainingrun")):
            raise PermissionDenied
        try:
            run, created = training_run_request(
                requested_by=request.user, trigger=TrainingRun.Trigger.BUTTON, params={}
            )
        except TrainingParamsError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))
        if run.enqueue_error:
            self.message_user(request, run.enqueue_error, messages.ERROR)
        elif created:
            self.message_user(request, f"Training run {run.pk} requested.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"Training run {run.pk} is already {run.status}: showing it.",
                messages.WARNING,
            )
        return HttpResponseRedirect(reverse("admin:training_trainingrun_change", args=[run.pk]))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {
            **(extra_context or {}),
            "can_retrain": request.user.is_staff
            and request.user.has_perm("training.add_trainingrun"),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ):
        extra_context = {
            **(extra_context or {}),
            "progress_url": reverse("training:run-progress", args=[int(object_id)])
            if object_id.isdigit()
            else "",
            "plot_url": reverse("training:run-metrics-png", args=[int(object_id)])
            if object_id.isdigit()
            else "",
        }
        return super().change_view(request, object_id, form_url, extra_context=extra_context)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "status",
        "backbone",
        "mode",
        "val_map_display",
        "gate_display",
        "n_train",
        "n_val",
        "scoring",
        "training_run",
        "created_at",
        "promoted_at",
    ]
    list_filter = ["status", "backbone"]
    list_select_related = ["training_run"]
    ordering = ["-created_at", "-id"]
    actions = ["promote"]
    readonly_fields = [
        "status",
        "backbone",
        "mode",
        "training_run",
        "val_map_display",
        "gate_detail",
        "metrics_table",
        "checkpoint_path",
        "checkpoint_sha256",
        "snapshot_sha256",
        "weights",
        "weights_sha256",
        "n_train",
        "n_val",
        "scoring_chunks",
        "scoring_chunks_done",
        "scoring_chunks_failed",
        "scoring_failures",
        "scored_at",
        "created_at",
        "promoted_at",
        "promoted_by",
        "promotion_note",
    ]
    # val_map shows rounded (val_map_display); the numbers of a trained model never change.
    exclude = ["concepts", "thresholds", "metrics", "family", "val_map", "gate"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="val mAP", ordering="val_map")
    def val_map_display(self, version: ModelVersion) -> str:
        return _map(version.val_map)

    @admin.display(description="gate: this vs active mAP")
    def gate_display(self, version: ModelVersion) -> str:
        """Both figures of the promotion gate, and the items they stand on."""
        gate = version.gate or {}
        if not gate:
            return "–"
        if gate.get("rule") == SAME_ITEMS:
            return format_html(
                "{} vs {} (v{}) on the same {} items",
                _map(gate.get("candidate_map")),
                _map(gate.get("active_map")),
                gate.get("active_version"),
                gate.get("items"),
            )
        if gate.get("active_version") is None:
            return "first version"
        return format_html(
            "{} vs {} (v{}), own splits",
            _map(gate.get("candidate_map")),
            _map(gate.get("active_map")),
            gate.get("active_version"),
        )

    @admin.display(description="promotion gate")
    def gate_detail(self, version: ModelVersion) -> str:
        gate = version.gate or {}
        if not gate:
            return "–"
        verdict = "not worse: promoted by the gate" if gate.get("passed") else "worse"
        concepts = gate.get("concepts") or []
        left = gate.get("concepts_left_out") or []
        return format_html(
            "<p>{}</p><p>{}</p>{}{}",
            gate_describe(gate),
            verdict,
            format_html("<p>concepts compared ({}): {}</p>", len(concepts), ", ".join(concepts))
            if concepts
            else "",
            format_html("<p>not known to the active version: {}</p>", ", ".join(left))
            if left
            else "",
        )

    @admin.display(description="scoring")
    def scoring(self, version: ModelVersion) -> str:
        """Chunks done while the pool is scored in workers (trained and zero-shot versions
        alike), and failed chunks, which keep a scoring from being done until it is resumed."""
        done, total = version.scoring_chunks_done, version.scoring_chunks
        if version.scoring_chunks_failed:
            return f"{done}/{total} chunks, {version.scoring_chunks_failed} failed"
        if done < total:
            return f"{done}/{total} chunks"
        return "done" if version.scored_at else "–"

    @admin.display(description="failed scoring chunks")
    def scoring_failures(self, version: ModelVersion) -> str:
        failed = list(
            version.scoring_chunk_rows.exclude(error="")
            .order_by("index")
            .values_list("index", "first_item_id", "last_item_id", "error")[:SHOWN_FAILURES]
        )
        if not failed:
            return "–"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>chunk {} (items {}–{}): {}</li>",
                ((i, a, b, shortened(error, 300)) for i, a, b, error in failed),
            ),
        )

    @admin.display(description="per-concept metrics and thresholds")
    def metrics_table(self, version: ModelVersion) -> str:
        ap = version.metrics.get("ap") or []
        f1 = version.metrics.get("per_concept_f1") or []
        rows = [
            (
                key,
                _map(ap[i] if i < len(ap) else None),
                _map(f1[i] if i < len(f1) else None),
                _map(version.thresholds[i] if i < len(version.thresholds) else None),
            )
            for i, key in enumerate(version.concepts)
        ]
        summary = format_html(
            "<p>mAP {} · micro F1 {} · macro F1 {} · ECE {}</p>",
            _map(version.metrics.get("map")),
            _map(version.metrics.get("micro_f1")),
            _map(version.metrics.get("macro_f1")),
            _map(version.metrics.get("ece")),
        )
        table = format_html(
            "<table><thead><tr><th>concept</th><th>AP</th><th>F1</th><th>threshold</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )
        return summary + table

    @admin.action(description="Promote to active (verifies the checkpoint)", permissions=["change"])
    def promote(
        self, request: HttpRequest, queryset: QuerySet[ModelVersion]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return None
        version = queryset.get()
        try:
            changed = model_version_promote(
                version=version, by=request.user, confirm="confirm" in request.POST
            )
        except PromotionNeedsConfirmation as exc:
            # A worse model must not become active in one click: show both mAPs, ask again.
            return confirmation_page(
                request,
                self,
                action="promote",
                title=f"Promote v{version.pk} over a better model?",
                lines=[
                    _comparison_line(version, exc.active, exc.comparison),
                    "Promoting it makes a model that did worse on validation score the pool and "
                    "choose the next rounds. Your name is recorded on the version with both mAPs.",
                ],
                objects=[
                    f"active now: v{exc.active.pk} ({exc.active.backbone}), val mAP "
                    f"{_map(exc.active.val_map)}",
                    f"to promote: v{version.pk} ({version.backbone}), val mAP "
                    f"{_map(version.val_map)}",
                ],
                confirm_label="Promote anyway",
            )
        except PromotionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        if not changed:
            self.message_user(request, f"v{version.pk} was already active.", messages.SUCCESS)
            return None
        version.refresh_from_db(fields=["promotion_note"])
        note = f" ({version.promotion_note})" if version.promotion_note else ""
        self.message_user(request, f"v{version.pk} is now active{note}.", messages.SUCCESS)
        return None


@admin.register(RoundRequest)
class RoundRequestAdmin(admin.ModelAdmin):
    """Rounds asked for through the API: what was asked, by whom, and the round it made."""

    list_display = ["id", "status", "round", "requested_by", "summary", "created_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["round", "requested_by"]
    ordering = ["-created_at", "-id"]
    readonly_fields = [
        "status",
        "requested_by",
        "params",
        "round",
        "summary",
        "error",
        "attempts",
        "max_attempts",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # asked for through the API or the select_round command

    def has_change_permission(self, request: HttpRequest, obj: RoundRequest | None = None) -> bool:
        return False
