"""Curators' reviews (the audit) and dataset releases."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html_join

from annotate.admin.common import ReadOnlyAdminMixin
from annotate.models import Concept, DatasetRelease, Review
from annotate.roles import signed_in


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit: every curator decision, as it was made. Nobody edits or deletes it here."""

    list_display = ("created_at", "item", "curator", "action", "before", "after", "comment")
    list_filter = ("action", "curator")
    list_select_related = ("item", "curator")
    search_fields = ("item__external_id", "comment")
    date_hierarchy = "created_at"


class ReleaseRequestForm(forms.ModelForm):
    """What a new release contains; the files are written by a background job."""

    reviewed_only = forms.BooleanField(required=False, help_text="Only curator-labelled items.")
    min_confidence = forms.FloatField(
        required=False,
        min_value=0.5,
        max_value=1.0,
        help_text="Keep crowd items whose every posterior is at least this far from 0.5.",
    )
    concepts = forms.ModelMultipleChoiceField(
        queryset=Concept.objects.all(),
        required=False,
        to_field_name="key",
        help_text="Leave empty for the whole active vocabulary.",
    )
    release_formats = forms.MultipleChoiceField(
        label="formats",
        choices=[
            ("csv", "CSV"),
            ("jsonl", "JSONL"),
            ("webannotation", "W3C Web Annotation (JSON-LD)"),
            ("imagefolder", "image folder (Hugging Face), zipped"),
        ],
        initial=["csv", "jsonl", "webannotation", "imagefolder"],
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = DatasetRelease
        fields = ("note",)


@admin.register(DatasetRelease)
class DatasetReleaseAdmin(admin.ModelAdmin):
    """Releases: "Add" starts a build with the chosen filters; a written release never changes
    and downloads from its page."""

    list_display = (
        "version",
        "status",
        "kind",
        "n_items",
        "created_by",
        "created_at",
        "finished_at",
        "download_links",
    )
    list_filter = ("status", "kind")
    list_select_related = ("created_by",)
    actions = ("release_again",)
    fields = (
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
        "download_links",
        "error",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ReleaseRequestForm
            kwargs["fields"] = (
                "note",
                "reviewed_only",
                "min_confidence",
                "concepts",
                "release_formats",
            )
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("reviewed_only", "min_confidence", "concepts", "release_formats", "note")
        return self.fields

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.readonly_fields if obj is not None else ()

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj, form, change) -> None:
        from annotate.services.releases import release_request

        data = form.cleaned_data
        release = release_request(
            user=signed_in(request.user),
            reviewed_only=data["reviewed_only"],
            min_confidence=data["min_confidence"],
            concepts=[c.key for c in data["concepts"]] or None,
            formats=data["release_formats"],
            note=data["note"],
        )
        obj.pk, obj.version = release.pk, release.version

    def save_related(self, request: HttpRequest, form, formsets, change) -> None:
        pass  # nothing related: the release row was written by the service

    @admin.action(description="Make a new release with the same filters", permissions=["add"])
    def release_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        from annotate.services.releases import release_request

        versions = []
        for release in queryset.order_by("version"):
            stored = release.filters or {}
            made = release_request(
                user=signed_in(request.user),
                reviewed_only=bool(stored.get("reviewed_only")),
                min_confidence=stored.get("min_confidence"),
                concepts=stored.get("concepts"),
                formats=release.formats,
                note=f"again with the filters of release {release.version}",
            )
            versions.append(str(made.version))
        self.message_user(request, f"Release(s) {', '.join(versions)} requested.", messages.SUCCESS)

    @admin.display(description="downloads")
    def download_links(self, release: DatasetRelease) -> str:
        if release.status != DatasetRelease.Status.SUCCEEDED:
            return "—"
        return format_html_join(
            " · ",
            '<a href="{}" download>{}</a>',
            (
                (reverse("admin:annotate_datasetrelease_download", args=[release.pk, what]), what)
                for what in [*release.formats, "manifest"]
            ),
        )

    def get_urls(self):
        from django.urls import path

        return [
            path(
                "<int:pk>/download/<slug:what>/",
                self.admin_site.admin_view(self.download_view),
                name="annotate_datasetrelease_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: int, what: str):
        from django.http import Http404

        from annotate.views import release_file_response

        release = DatasetRelease.objects.filter(pk=pk).first()
        if release is None or not self.has_view_permission(request, release):
            raise Http404("no such release")
        try:
            return release_file_response(release, what)
        except FileNotFoundError as exc:
            raise Http404(str(exc)) from exc
