"""What goes to Zooniverse: workflows and their versions, rounds with their picks, subjects."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from annotate.admin.common import ReadOnlyAdminMixin, rounded
from annotate.models import Round, RoundPick, Subject, Workflow, WorkflowVersion

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class PickCount(TypedDict):
    """What RoundAdmin's queryset adds to each round."""

    n_picks: int


class WorkflowVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    fields = ("version", "task_key", "task_type", "answer_map", "created_at")
    readonly_fields = fields

    @admin.display(description="answers")
    def answer_map(self, version: WorkflowVersion) -> str:
        return format_html_join(
            ", ",
            "{}: {} → {}",
            (
                (i, a.get("label", ""), a.get("concept") or "—")
                for i, a in enumerate(version.answers or [])
            ),
        )


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = (
        "zooniverse_id",
        "display_name",
        "project_id",
        "task_key",
        "task_type",
        "subject_match",
        "active",
    )
    list_filter = ("active", "task_type")
    search_fields = ("display_name", "=zooniverse_id")
    inlines = (WorkflowVersionInline,)


class RoundPickInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Why each item is in the round: rank, the strategy's score and the reason."""

    model = RoundPick
    extra = 0
    fields = ("rank", "item", "reason", "score_rounded")
    readonly_fields = fields
    ordering = ("rank",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("item")

    @admin.display(description="score")
    def score_rounded(self, pick: RoundPick) -> str:
        return rounded(pick.score, 4)


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    """Rounds are made by the round service (``select_round``, the API, the loop) and pushed by
    it: here they are read, and only their name and notes change by hand."""

    list_display = (
        "number",
        "name",
        "workflow",
        "strategy",
        "model_version",
        "random_share_rounded",
        "n_picks",
        "status",
        "subject_set_id",
        "created_at",
    )
    list_filter = ("status", "strategy")
    list_select_related = ("workflow", "model_version")
    search_fields = ("name",)
    fields = (
        "number",
        "name",
        "status",
        "workflow",
        "strategy",
        "model_version",
        "random_share_rounded",
        "subject_set_id",
        "notes",
        "created_at",
        "pushed_at",
    )
    # Only the round service makes and changes rounds: people may rename them and take notes.
    readonly_fields = tuple(f for f in fields if f not in ("name", "notes"))
    inlines = (RoundPickInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="random share", ordering="random_share")
    def random_share_rounded(self, round_: Round) -> str:
        return rounded(round_.random_share, 2)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(n_picks=Count("picks"))

    @admin.display(description="picks", ordering="n_picks")
    def n_picks(self, round_: WithAnnotations[Round, PickCount]) -> int:
        return round_.n_picks


@admin.register(RoundPick)
class RoundPickAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every pick of every round, filterable by reason: why was this item chosen?"""

    list_display = ("round", "rank", "item", "reason", "score_rounded")
    list_filter = ("reason", "round__strategy", "round")
    list_select_related = ("round", "item")
    search_fields = ("item__external_id",)
    ordering = ("-round__number", "rank")
    show_full_result_count = False
    fields = ("round", "rank", "item", "reason", "score_rounded")

    @admin.display(description="score", ordering="score")
    def score_rounded(self, pick: RoundPick) -> str:
        return rounded(pick.score, 4)


@admin.register(Subject)
class SubjectAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "zooniverse_id",
        "item",
        "round",
        "priority_rounded",
        "retired_at",
        "upstream_state",
    )
    list_filter = ("upstream_state", "retirement_reason", "round")
    list_select_related = ("item", "round")
    search_fields = ("=zooniverse_id", "item__external_id")
    raw_id_fields = ("item", "round")
    show_full_result_count = False

    @admin.display(description="priority", ordering="priority")
    def priority_rounded(self, subject: Subject) -> str:
        return rounded(subject.priority)
