"""Imports: their reports, the rows they quarantined, the classification sync's cursor."""

from __future__ import annotations

from django.contrib import admin

from annotate.admin.common import ReadOnlyAdminMixin
from annotate.models import ImportReport, QuarantinedRow, SyncCursor


@admin.register(SyncCursor)
class SyncCursorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("workflow", "last_id", "updated_at")
    list_select_related = ("workflow",)


class QuarantinedRowInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = QuarantinedRow
    extra = 0
    fields = ("line", "record_id", "field", "reason", "raw")
    readonly_fields = fields
    max_num = 0


@admin.register(ImportReport)
class ImportReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "started_at",
        "kind",
        "source",
        "status",
        "total",
        "created",
        "updated",
        "unchanged",
        "quarantined",
    )
    list_filter = ("kind", "status")
    search_fields = ("source",)
    inlines = (QuarantinedRowInline,)


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("report", "line", "record_id", "field", "reason")
    list_filter = ("report__kind", "field")
    list_select_related = ("report",)
    search_fields = ("reason", "record_id")
    show_full_result_count = False
