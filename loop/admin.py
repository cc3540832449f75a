"""Admin for the pipeline: its steps and its event log, to read only; and the staff actions page.

Both tables are written by the pipeline alone (``loop.services``): a hand-edited lock or request
would confuse the reconciler, and the event log is an audit, so nobody adds, changes or deletes
a row here, not even a superuser. Viewing needs the models' view permission
(``loop.view_loopstep``, ``loop.view_loopevent``), which every default role holds
(``annotate.roles``).

The staff actions page (``loop.staff_views``: sync now, request or push a round, make a release)
is mounted here, under ``/admin/loop/loopstep/actions/``, behind the admin's login.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars
from django.urls import path
from django.utils.html import format_html

from loop.models import LoopEvent, LoopStep

#: Status colours, as on the dashboard's badges.
STATUS_COLOURS = {
    "done": "#2e7d32",
    "nothing": "#6b7280",
    "retrying": "#b45309",
    "failed": "#c62828",
}


def _status(value: str, label: str) -> str:
    if not value:
        return "–"
    return format_html(
        '<strong style="color: {}">{}</strong>', STATUS_COLOURS.get(value, "inherit"), label
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(LoopEvent)
class LoopEventAdmin(ReadOnlyAdmin):
    list_display = [
        "finished_at",
        "step",
        "status_display",
        "trigger",
        "summary_short",
        "error_short",
    ]
    list_display_links = ["finished_at"]
    list_filter = ["step", "status"]
    date_hierarchy = "finished_at"
    search_fields = ["summary", "error", "trigger"]
    # The log only grows: skip the unfiltered count(*) on every filtered page.
    show_full_result_count = False
    fields = [
        "step",
        "status",
        "trigger",
        "summary",
        "error",
        "detail",
        "started_at",
        "finished_at",
        "task_id",
    ]

    @admin.display(description="status", ordering="status")
    def status_display(self, event: LoopEvent) -> str:
        return _status(event.status, event.get_status_display())

    @admin.display(description="summary")
    def summary_short(self, event: LoopEvent) -> str:
        return truncatechars(event.summary, 120)

    @admin.display(description="error")
    def error_short(self, event: LoopEvent) -> str:
        if not event.error:
            return ""
        return format_html(
            '<span style="color: {}" title="{}">{}</span>',
            STATUS_COLOURS["failed"],
            event.error[:2000],
            truncatechars(event.error, 120),
        )


@admin.register(LoopStep)
class LoopStepAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "status_display",
        "last_finished_at",
        "summary_short",
        "pending",
        "running_since",
        "runs",
        "failures",
    ]
    fields = [
        "name",
        "last_status",
        "last_summary",
        "last_error",
        "last_started_at",
        "last_finished_at",
        "runs",
        "failures",
        "requested_at",
        "request_reason",
        "request_seq",
        "served_seq",
        "queued",
        "queued_at",
        "running_since",
        "lease_until",
        "running_task",
        "state",
    ]

    @admin.display(description="last status", ordering="last_status")
    def status_display(self, step: LoopStep) -> str:
        labels = dict(LoopEvent.Status.choices)
        return _status(step.last_status, labels.get(step.last_status, step.last_status))

    @admin.display(description="last summary")
    def summary_short(self, step: LoopStep) -> str:
        return truncatechars(step.last_summary, 160)

    @admin.display(description="pending", boolean=True)
    def pending(self, step: LoopStep) -> bool:
        return step.request_seq > step.served_seq

    def get_urls(self):
        from loop import staff_views

        wrap = self.admin_site.admin_view
        return [
            path("actions/", wrap(staff_views.staff_actions_page), name="loop_staff_actions"),
            path(
                "actions/runs.json",
                wrap(staff_views.staff_actions_runs),
                name="loop_staff_actions_runs",
            ),
            path(
                "actions/<slug:action>/",
                wrap(staff_views.staff_action_submit),
                name="loop_staff_action",
            ),
            *super().get_urls(),
        ]
