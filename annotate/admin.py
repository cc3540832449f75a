"""The curator's web admin for the crowd side: lists that load in a few queries, images inline."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from annotate.models import (
    AggregatedLabel,
    Classification,
    Concept,
    DatasetRelease,
    ImportReport,
    Item,
    PriorLabel,
    QuarantinedRow,
    Review,
    Round,
    RoundPick,
    Subject,
    SyncCursor,
    Volunteer,
    VolunteerSkill,
    Workflow,
    WorkflowVersion,
)


def media_url(relative: str) -> str:
    # Django prefixes a relative MEDIA_URL with the script name at run time ("/media/").
    return f"{settings.MEDIA_URL}{relative}"


def image_src(item: Item, *, large: bool = False) -> str:
    """The URL to show an item's image with: our stored copy, else its http(s) source."""
    if large and item.image_file:
        return media_url(item.image_file)
    if item.thumbnail:
        return media_url(item.thumbnail)
    if item.image_url.startswith(("https://", "http://")):
        return item.image_url
    return ""


def thumbnail_html(item: Item, *, size: int = 64) -> str:
    src = image_src(item)
    if not src:
        return format_html('<span class="cl-noimage" title="{}">no image</span>', item.image_state)
    return format_html(
        '<img src="{}" alt="" loading="lazy" referrerpolicy="no-referrer" '
        'style="width:{}px;height:{}px;object-fit:cover;border-radius:3px">',
        src,
        size,
        size,
    )


class ReadOnlyAdminMixin:
    """For records written by imports and services only: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Concept)
class ConceptAdmin(admin.ModelAdmin):
    list_display = ("key", "label", "uri_link", "position", "active")
    list_editable = ("position", "active")
    list_filter = ("active",)
    search_fields = ("key", "label", "uri")
    ordering = ("position", "key")

    @admin.display(description="URI")
    def uri_link(self, concept: Concept) -> str:
        if not concept.uri.startswith(("http://", "https://")):
            return concept.uri
        return format_html(
            '<a href="{}" rel="noopener noreferrer">{}</a>', concept.uri, concept.uri
        )


class PriorLabelInline(admin.TabularInline):
    model = PriorLabel
    extra = 0
    autocomplete_fields = ("concept",)


class AggregatedLabelInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = AggregatedLabel
    extra = 0
    fields = ("concept", "posterior", "votes_for", "votes_against", "method", "updated_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("concept").order_by("concept__position")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = (
        "thumb",
        "external_id",
        "short_title",
        "image_state",
        "n_classifications",
        "consensus",
        "review_state",
        "contradicts_prior",
        "review_link",
    )
    list_display_links = ("thumb", "external_id")
    actions = ("bulk_accept_confident",)
    list_filter = ("image_state", "consensus", "review_state", "contradicts_prior", "provider")
    search_fields = ("external_id", "title", "provider")
    readonly_fields = (
        "image_preview",
        "image_sha256",
        "image_width",
        "image_height",
        "thumbnail",
        "image_file",
        "n_classifications",
        "consensus",
        "uncertainty",
        "contradicts_prior",
        "review_state",
        "curated_concepts",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("image_preview", "external_id", "title", "provider", "rights")}),
        (
            "Image",
            {
                "fields": (
                    "image_url",
                    "image_file",
                    "thumbnail",
                    "image_state",
                    "image_error",
                    ("image_width", "image_height"),
                    "image_sha256",
                )
            },
        ),
        (
            "Crowd",
            {
                "fields": (
                    "n_classifications",
                    "consensus",
                    "uncertainty",
                    "contradicts_prior",
                    "review_state",
                    "curated_concepts",
                )
            },
        ),
        (
            "Metadata",
            {"fields": ("metadata", "created_at", "updated_at"), "classes": ("collapse",)},
        ),
    )
    inlines = (PriorLabelInline, AggregatedLabelInline)
    list_per_page = 50
    show_full_result_count = False

    @admin.display(description="")
    def thumb(self, item: Item) -> str:
        return thumbnail_html(item)

    @admin.display(description="title", ordering="title")
    def short_title(self, item: Item) -> str:
        return item.title if len(item.title) <= 80 else item.title[:79] + "…"

    @admin.display(description="review")
    def review_link(self, item: Item) -> str:
        return format_html('<a href="{}">review</a>', reverse("review:item", args=[item.pk]))

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("annotate.add_review")

    @admin.action(
        description="Bulk accept confident items (every posterior ≥ 0.95 or ≤ 0.05)",
        permissions=["review"],
    )
    def bulk_accept_confident(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        from annotate.services.review import reviews_bulk_accept

        selected = queryset.count()
        accepted = reviews_bulk_accept(items_qs=queryset, curator=request.user)
        skipped = selected - accepted
        self.message_user(
            request,
            f"Accepted the crowd's label on {accepted} items; {skipped} left for a curator "
            "(already reviewed, no votes, or a concept not settled).",
            messages.SUCCESS if accepted else messages.WARNING,
        )

    @admin.display(description="image")
    def image_preview(self, item: Item) -> str:
        src = image_src(item, large=True)
        if not src:
            return format_html("no image ({})", item.get_image_state_display())
        # Small scans are scaled up with crisp pixels; photographs keep smooth scaling.
        rendering = "pixelated" if (item.image_width or 0) and item.image_width < 256 else "auto"
        return format_html(
            '<img src="{}" alt="" referrerpolicy="no-referrer" '
            'style="width:384px;max-width:100%;height:auto;image-rendering:{}">',
            src,
            rendering,
        )


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
    fields = ("rank", "item", "reason", "score")
    readonly_fields = fields
    ordering = ("rank",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("item")


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "name",
        "workflow",
        "strategy",
        "model_version",
        "random_share",
        "n_picks",
        "status",
        "subject_set_id",
        "created_at",
    )
    list_filter = ("status", "strategy")
    list_select_related = ("workflow", "model_version")
    search_fields = ("name",)
    raw_id_fields = ("model_version",)
    inlines = (RoundPickInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(n_picks=Count("picks"))

    @admin.display(description="picks", ordering="n_picks")
    def n_picks(self, round_: Round) -> int:
        return round_.n_picks  # type: ignore[attr-defined]


@admin.register(RoundPick)
class RoundPickAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every pick of every round, filterable by reason: why was this item chosen?"""

    list_display = ("round", "rank", "item", "reason", "score")
    list_filter = ("reason", "round__strategy", "round")
    list_select_related = ("round", "item")
    search_fields = ("item__external_id",)
    ordering = ("-round__number", "rank")
    show_full_result_count = False


@admin.register(Subject)
class SubjectAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("zooniverse_id", "item", "round", "priority", "retired_at", "upstream_state")
    list_filter = ("upstream_state", "retirement_reason", "round")
    list_select_related = ("item", "round")
    search_fields = ("=zooniverse_id", "item__external_id")
    raw_id_fields = ("item", "round")
    show_full_result_count = False


class VolunteerSkillInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = VolunteerSkill
    extra = 0
    fields = ("concept", "sensitivity", "specificity", "n_votes")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("concept").order_by("concept__position")


@admin.register(Volunteer)
class VolunteerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("key", "user_name", "logged_in", "n_classifications", "created_at")
    list_filter = ("logged_in",)
    search_fields = ("key", "user_name", "=zooniverse_user_id")
    inlines = (VolunteerSkillInline,)
    show_full_result_count = False
    readonly_fields = ("latest_classifications",)
    latest_classifications_shown = 20

    @admin.display(description="latest classifications")
    def latest_classifications(self, volunteer: Volunteer) -> str:
        # The latest few only: a busy volunteer has thousands; the link opens the paginated list.
        latest = list(
            Classification.objects.filter(volunteer=volunteer)
            .select_related("item", "subject")
            .order_by("-created_at", "-id")[: self.latest_classifications_shown]
        )
        if not latest:
            return "none"
        keys = dict(Concept.objects.values_list("id", "key"))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    c.created_at.strftime("%Y-%m-%d %H:%M"),
                    c.item.external_id if c.item else "—",
                    c.subject.zooniverse_id,
                    ", ".join(keys.get(cid, f"#{cid}") for cid in c.concept_ids or []) or "none",
                )
                for c in latest
            ),
        )
        everything = reverse("admin:annotate_classification_changelist")
        return format_html(
            "<table><thead><tr><th>when</th><th>item</th><th>subject</th><th>ticked</th></tr>"
            '</thead><tbody>{}</tbody></table><p><a href="{}?volunteer__id__exact={}">'
            "all {} classifications →</a></p>",
            rows,
            everything,
            volunteer.pk,
            volunteer.n_classifications,
        )


@admin.register(Classification)
class ClassificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "zooniverse_id",
        "created_at",
        "volunteer",
        "subject",
        "item",
        "ticked",
        "is_duplicate",
        "gold_standard",
        "source",
    )
    list_filter = ("is_duplicate", "gold_standard", "expert", "source", "workflow")
    list_select_related = ("volunteer", "subject", "item")
    search_fields = ("=zooniverse_id", "volunteer__user_name", "item__external_id")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # One query for the vocabulary, so the concept column costs nothing per row.
        self._concept_keys = dict(Concept.objects.values_list("id", "key"))
        return super().changelist_view(request, extra_context)

    @admin.display(description="concepts ticked")
    def ticked(self, classification: Classification) -> str:
        keys = getattr(self, "_concept_keys", None)
        if keys is None:
            keys = self._concept_keys = dict(Concept.objects.values_list("id", "key"))
        names = [keys.get(cid, f"#{cid}") for cid in classification.concept_ids or []]
        return ", ".join(names) or "none"


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


@admin.register(AggregatedLabel)
class AggregatedLabelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("item", "concept", "posterior", "votes_for", "votes_against", "method")
    list_filter = ("method", "concept")
    list_select_related = ("item", "concept")
    search_fields = ("item__external_id",)
    show_full_result_count = False


@admin.register(VolunteerSkill)
class VolunteerSkillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("volunteer", "concept", "sensitivity", "specificity", "n_votes")
    list_filter = ("concept",)
    list_select_related = ("volunteer", "concept")
    search_fields = ("volunteer__user_name", "volunteer__key")
    show_full_result_count = False


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
            user=request.user,
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
                user=request.user,
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
        from django.http import FileResponse, Http404

        from annotate.services.releases import (
            CONTENT_TYPES,
            release_download_name,
            release_file_path,
        )

        release = DatasetRelease.objects.filter(pk=pk).first()
        if release is None or not self.has_view_permission(request, release):
            raise Http404("no such release")
        try:
            path = release_file_path(release, what)
        except FileNotFoundError as exc:
            raise Http404(str(exc)) from exc
        response = FileResponse(
            path.open("rb"), as_attachment=True, filename=release_download_name(release, what)
        )
        response["Content-Type"] = CONTENT_TYPES[what]
        response["X-Content-Type-Options"] = "nosniff"
        return response
