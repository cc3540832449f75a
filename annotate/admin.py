"""The curator's web admin for the crowd side: lists that load in a few queries, images inline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, FloatField, Max, OuterRef, QuerySet, Subquery, Sum
from django.db.models.expressions import OrderBy
from django.db.models.functions import Cast, NullIf
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import truncatechars
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
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
    VolunteerExclusion,
    VolunteerSkill,
    Workflow,
    WorkflowVersion,
)
from annotate.services.item_images import item_image_src


def rounded(value: float | None, places: int = 3) -> str:
    """A number for reading: ``places`` decimals, "–" for none (or not a number)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{places}f}"


def when(moment: datetime | None) -> str:
    """A date and time in a list column: short, sortable, in the site's time zone."""
    if moment is None:
        return "–"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def shortened(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters with an ellipsis, the whole of it on hover."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}</span>', text, truncatechars(text, length))


def confirmation_page(
    request: HttpRequest,
    model_admin: admin.ModelAdmin,
    *,
    title: str,
    lines: Sequence[str],
    confirm_label: str,
    action: str | None = None,
    form: forms.Form | None = None,
    objects: Sequence[str] = (),
    more: int = 0,
    original: object | None = None,
    cancel_url: str | None = None,
) -> TemplateResponse:
    """A page that asks before an action (``action``: its name, posted back with the selection)
    or a button's view (``action`` None: posted back to the same URL) does something.

    The answer comes back to the same URL with ``confirm`` set.
    """
    hidden: list[tuple[str, str]] = []
    if action is not None:
        hidden = [("action", action), ("select_across", request.POST.get("select_across", "0"))]
        hidden += [(ACTION_CHECKBOX_NAME, pk) for pk in request.POST.getlist(ACTION_CHECKBOX_NAME)]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "lines": lines,
        "objects": objects,
        "more": more,
        "form": form,
        "hidden": hidden,
        "confirm_label": confirm_label,
        "original": original,
        "form_action": request.get_full_path(),
        "cancel_url": cancel_url or request.get_full_path(),
    }
    return TemplateResponse(request, "admin/crowdloop/confirm_action.html", context)


def thumbnail_html(item: Item, *, size: int = 64) -> str:
    src = item_image_src(item)
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
    fields = ("concept", "posterior_rounded", "votes_for", "votes_against", "method", "updated_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("concept").order_by("concept__position")

    @admin.display(description="posterior")
    def posterior_rounded(self, label: AggregatedLabel) -> str:
        return rounded(label.posterior)


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    # Few, narrow columns: the list fits 1,400 px beside its filters; the rest is on the item page.
    list_display = (
        "thumb",
        "external_id_short",
        "short_title",
        "votes",
        "consensus",
        "uncertainty_rounded",
        "review_state",
        "flags",
        "review_link",
    )
    list_display_links = ("thumb", "external_id_short")
    actions = ("bulk_accept_confident",)
    list_filter = (
        "consensus",
        "review_state",
        "contradicts_prior",
        "conflicts_model",
        "image_state",
        "provider",
    )
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
        "uncertainty_rounded",
        "contradicts_prior",
        "conflicts_model",
        "review_state",
        "curated_concepts",
        "created_at",
        "updated_at",
        "identity_history",
    )
    #: An item's identity: a re-import finds the item by these, so they never change by hand.
    identity_fields = ("external_id", "image_url")
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
                    "identity_history",
                )
            },
        ),
        (
            "Crowd",
            {
                "fields": (
                    "n_classifications",
                    "consensus",
                    "uncertainty_rounded",
                    "contradicts_prior",
                    "conflicts_model",
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

    def get_readonly_fields(self, request: HttpRequest, obj: Item | None = None):
        fields = super().get_readonly_fields(request, obj)
        if obj is None:
            return fields  # the add form sets the identity once
        return (*fields, *self.identity_fields)

    @admin.display(description="")
    def thumb(self, item: Item) -> str:
        return thumbnail_html(item)

    @admin.display(description="external id", ordering="external_id")
    def external_id_short(self, item: Item) -> str:
        return shortened(item.external_id, 32)

    @admin.display(description="title", ordering="title")
    def short_title(self, item: Item) -> str:
        return shortened(item.title, 40)

    @admin.display(description="votes", ordering="n_classifications")
    def votes(self, item: Item) -> int:
        return item.n_classifications

    @admin.display(description="uncertainty", ordering="uncertainty")
    def uncertainty_rounded(self, item: Item) -> str:
        return rounded(item.uncertainty, 2)

    @admin.display(description="flags")
    def flags(self, item: Item) -> str:
        names = [
            name
            for name, on in (("prior", item.contradicts_prior), ("model", item.conflicts_model))
            if on
        ]
        titles = {
            "prior": "a confident crowd contradicts the prior labels",
            "model": "the active model is confident the other way than a confident crowd",
        }
        return format_html_join(
            " ", '<span class="cl-flag" title="{}">{}</span>', ((titles[n], n) for n in names)
        ) or "–"

    @admin.display(description="review")
    def review_link(self, item: Item) -> str:
        return format_html('<a href="{}">review</a>', reverse("review:item", args=[item.pk]))

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("annotate.add_review")

    @admin.action(
        description="Bulk accept confident items (every posterior ≥ 0.95 or ≤ 0.05)…",
        permissions=["review"],
    )
    def bulk_accept_confident(
        self, request: HttpRequest, queryset: QuerySet[Item]
    ) -> HttpResponse | None:
        from annotate.services.review import reviews_bulk_accept, settled_items

        selected = queryset.count()
        if "confirm" not in request.POST:
            # Ask first, with the count: one click must not decide on hundreds of items.
            eligible = settled_items(items_qs=queryset, min_confidence=0.95).count()
            if not eligible:
                self.message_user(
                    request,
                    f"None of the {selected} selected items can be accepted in bulk (already "
                    "reviewed, no votes, or a concept not settled).",
                    messages.WARNING,
                )
                return None
            return confirmation_page(
                request,
                self,
                action="bulk_accept_confident",
                title="Accept the crowd's labels?",
                lines=[
                    f"This accepts the crowd's label on {eligible} of the {selected} selected "
                    "items: each is unreviewed, has votes, and has every concept posterior "
                    "≥ 0.95 or ≤ 0.05.",
                    f"The other {selected - eligible} are left for a curator. Each decision is "
                    "recorded in the review audit.",
                ],
                confirm_label=f"Yes, accept {eligible} items",
            )
        accepted = reviews_bulk_accept(items_qs=queryset, curator=request.user)
        skipped = selected - accepted
        self.message_user(
            request,
            f"Accepted the crowd's label on {accepted} items; {skipped} left for a curator "
            "(already reviewed, no votes, or a concept not settled).",
            messages.SUCCESS if accepted else messages.WARNING,
        )
        return None

    @admin.display(description="changed by imports")
    def identity_history(self, item: Item) -> str:
        """The audit of the item's image source and content, as imports changed them."""
        changes = item.identity_changes.select_related("report") if item.pk else []
        rows = format_html_join(
            "",
            "<li>{}: {} {} → {} ({})</li>",
            (
                (
                    when(change.changed_at),
                    change.field,
                    change.before or "–",
                    change.after or "–",
                    f"import {change.report_id}" if change.report_id else "import deleted",
                )
                for change in changes
            ),
        )
        return format_html("<ul>{}</ul>", rows) if rows else "–"

    @admin.display(description="image")
    def image_preview(self, item: Item) -> str:
        src = item_image_src(item, large=True)
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
    def n_picks(self, round_: Round) -> int:
        return round_.n_picks  # type: ignore[attr-defined]


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
        "zooniverse_id", "item", "round", "priority_rounded", "retired_at", "upstream_state"
    )
    list_filter = ("upstream_state", "retirement_reason", "round")
    list_select_related = ("item", "round")
    search_fields = ("=zooniverse_id", "item__external_id")
    raw_id_fields = ("item", "round")
    show_full_result_count = False

    @admin.display(description="priority", ordering="priority")
    def priority_rounded(self, subject: Subject) -> str:
        return rounded(subject.priority)


class VolunteerSkillInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = VolunteerSkill
    extra = 0
    fields = ("concept", "sensitivity_rounded", "specificity_rounded", "n_votes")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("concept").order_by("concept__position")

    @admin.display(description="sensitivity")
    def sensitivity_rounded(self, skill: VolunteerSkill) -> str:
        return rounded(skill.sensitivity)

    @admin.display(description="specificity")
    def specificity_rounded(self, skill: VolunteerSkill) -> str:
        return rounded(skill.specificity)


class VolunteerExclusionInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The volunteer's history of exclusions, newest first."""

    model = VolunteerExclusion
    extra = 0
    verbose_name = "exclusion"
    verbose_name_plural = "history of exclusions from aggregation"
    fields = ("created_at", "what", "by", "reason")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("by")

    @admin.display(description="what")
    def what(self, exclusion: VolunteerExclusion) -> str:
        return "excluded" if exclusion.excluded else "taken back"


class NullsLast(OrderBy):
    """A column's order that keeps rows without a value last both ways: the admin reverses an
    ``OrderBy`` for a descending sort, which would otherwise put them first."""

    def __init__(self, name: str) -> None:
        super().__init__(F(name), nulls_last=True)

    def reverse_ordering(self) -> NullsLast:
        self.descending = not self.descending
        return self


def volunteer_skills(queryset: QuerySet[Volunteer]) -> QuerySet[Volunteer]:
    """Volunteers with their skill across concepts, from the last full aggregation:
    ``mean_sensitivity`` and ``mean_specificity`` (means over concepts weighted by the votes on
    each), and ``skill_votes`` (the most votes on one concept: the classifications counted).

    Correlated subqueries on the (volunteer, concept) unique index, so a page of volunteers
    costs one query, and only a sort by skill reads every volunteer's skills.
    """
    skills = VolunteerSkill.objects.filter(volunteer=OuterRef("pk")).order_by().values("volunteer")
    votes = NullIf(Sum("n_votes"), 0)

    def weighted(field: str) -> Subquery:
        mean = Sum(F(field) * Cast("n_votes", FloatField()), output_field=FloatField()) / votes
        return Subquery(skills.annotate(v=mean).values("v")[:1], output_field=FloatField())

    return queryset.annotate(
        mean_sensitivity=weighted("sensitivity"),
        mean_specificity=weighted("specificity"),
        skill_votes=Subquery(skills.annotate(v=Max("n_votes")).values("v")[:1]),
    )


class ExclusionForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why: kept in each volunteer's history of exclusions.",
    )


@admin.register(Volunteer)
class VolunteerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Volunteers with their skill; excluding a spammer from aggregation (and taking them back)
    asks for a reason and is recorded (``annotate.services.volunteers``)."""

    list_display = (
        "name_short",
        "excluded",
        "sensitivity",
        "specificity",
        "votes",
        "classifications",
        "logged_in",
        "first_seen",
    )
    list_display_links = ("name_short",)
    list_filter = ("excluded", "logged_in")
    search_fields = ("key", "user_name", "=zooniverse_user_id")
    actions = ("exclude_from_aggregation", "take_back")
    inlines = (VolunteerExclusionInline, VolunteerSkillInline)
    show_full_result_count = False
    fields = (
        "key",
        "user_name",
        "zooniverse_user_id",
        "logged_in",
        "excluded",
        "skill",
        "n_classifications",
        "created_at",
        "latest_classifications",
    )
    readonly_fields = ("skill", "latest_classifications")
    latest_classifications_shown = 20

    def get_queryset(self, request: HttpRequest) -> QuerySet[Volunteer]:
        return volunteer_skills(super().get_queryset(request))

    @admin.display(description="classifications", ordering="n_classifications")
    def classifications(self, volunteer: Volunteer) -> int:
        return volunteer.n_classifications

    @admin.display(description="first seen", ordering="created_at")
    def first_seen(self, volunteer: Volunteer) -> str:
        return when(volunteer.created_at)

    @admin.display(description="volunteer", ordering="key")
    def name_short(self, volunteer: Volunteer) -> str:
        return shortened(str(volunteer), 28)

    @admin.display(description="sensitivity", ordering=NullsLast("mean_sensitivity"))
    def sensitivity(self, volunteer: Volunteer) -> str:
        return rounded(volunteer.mean_sensitivity)  # type: ignore[attr-defined]

    @admin.display(description="specificity", ordering=NullsLast("mean_specificity"))
    def specificity(self, volunteer: Volunteer) -> str:
        return rounded(volunteer.mean_specificity)  # type: ignore[attr-defined]

    @admin.display(description="votes counted", ordering=NullsLast("skill_votes"))
    def votes(self, volunteer: Volunteer) -> int | str:
        counted = volunteer.skill_votes  # type: ignore[attr-defined]
        return "–" if counted is None else counted

    @admin.display(description="skill (vote-weighted mean over concepts)")
    def skill(self, volunteer: Volunteer) -> str:
        return format_html(
            "sensitivity {} · specificity {} · {} votes counted at the last full aggregation",
            rounded(volunteer.mean_sensitivity),  # type: ignore[attr-defined]
            rounded(volunteer.mean_specificity),  # type: ignore[attr-defined]
            volunteer.skill_votes or 0,  # type: ignore[attr-defined]
        )

    def has_exclude_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("annotate.add_volunteerexclusion")

    @admin.action(description="Exclude from aggregation…", permissions=["exclude"])
    def exclude_from_aggregation(
        self, request: HttpRequest, queryset: QuerySet[Volunteer]
    ) -> HttpResponse | None:
        return self._exclusion_action(request, queryset, excluded=True)

    @admin.action(description="Take back into aggregation…", permissions=["exclude"])
    def take_back(self, request: HttpRequest, queryset: QuerySet[Volunteer]) -> HttpResponse | None:
        return self._exclusion_action(request, queryset, excluded=False)

    def _exclusion_action(
        self, request: HttpRequest, queryset: QuerySet[Volunteer], *, excluded: bool
    ) -> HttpResponse | None:
        form = ExclusionForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            self._exclusion_record(request, queryset, excluded=excluded, form=form)
            return None
        to_change = queryset.filter(excluded=not excluded)
        n = to_change.count()
        if not n:
            state = "excluded" if excluded else "counted in aggregation"
            self.message_user(request, f"Every selected volunteer is already {state}.")
            return None
        shown = list(to_change.order_by("pk")[:20])
        return confirmation_page(
            request,
            self,
            action="exclude_from_aggregation" if excluded else "take_back",
            title=self._exclusion_title(excluded, n),
            lines=self._exclusion_lines(excluded),
            objects=[str(v) for v in shown],
            more=n - len(shown),
            form=form,
            confirm_label=(
                f"Exclude {n} volunteer{'s' if n != 1 else ''}"
                if excluded
                else f"Take back {n} volunteer{'s' if n != 1 else ''}"
            ),
        )

    def _exclusion_record(
        self,
        request: HttpRequest,
        volunteers: QuerySet[Volunteer],
        *,
        excluded: bool,
        form: ExclusionForm,
    ) -> int:
        from annotate.services.volunteers import volunteers_exclude, volunteers_include

        change = volunteers_exclude if excluded else volunteers_include
        n = change(volunteers=volunteers, by=request.user, reason=form.cleaned_data["reason"])
        what = "excluded from" if excluded else "taken back into"
        self.message_user(
            request,
            f"{n} volunteer{'s' if n != 1 else ''} {what} aggregation; their votes "
            f"{'leave' if excluded else 'return to'} the labels at the next full aggregation, "
            "which the loop runs now.",
            messages.SUCCESS if n else messages.WARNING,
        )
        return n

    @staticmethod
    def _exclusion_title(excluded: bool, n: int) -> str:
        who = "this volunteer" if n == 1 else f"{n} volunteers"
        return f"Exclude {who} from aggregation?" if excluded else f"Take {who} back?"

    @staticmethod
    def _exclusion_lines(excluded: bool) -> list[str]:
        if excluded:
            return [
                "Their classifications stay stored but are no longer votes: the next full "
                "aggregation (the loop asks for one now) drops them from every label, and each "
                "item's vote count leaves them out at once.",
                "This can be taken back: their votes return at the full aggregation after that.",
            ]
        return [
            "Their votes count again from the next full aggregation (the loop asks for one now)."
        ]

    def get_urls(self):
        return [
            path(
                "<path:object_id>/exclusion/",
                self.admin_site.admin_view(self.exclusion_view),
                name="annotate_volunteer_exclusion",
            ),
            *super().get_urls(),
        ]

    def exclusion_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The button on a volunteer's page: exclude them, or take them back, with a reason."""
        if not self.has_exclude_permission(request):
            raise PermissionDenied
        volunteer = self.get_object(request, object_id)
        if volunteer is None:
            raise Http404("no such volunteer")
        excluded = not volunteer.excluded
        page = reverse("admin:annotate_volunteer_change", args=[volunteer.pk])
        form = ExclusionForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            one = Volunteer.objects.filter(pk=volunteer.pk)
            self._exclusion_record(request, one, excluded=excluded, form=form)
            return HttpResponseRedirect(page)
        return confirmation_page(
            request,
            self,
            title=self._exclusion_title(excluded, 1),
            lines=self._exclusion_lines(excluded),
            objects=[str(volunteer)],
            form=form,
            original=volunteer,
            cancel_url=page,
            confirm_label="Exclude from aggregation" if excluded else "Take back",
        )

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None):
        extra_context = {
            **(extra_context or {}),
            "can_exclude": self.has_exclude_permission(request),
            "classifications_url": reverse("admin:annotate_classification_changelist"),
        }
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

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
            'all {} classifications →</a> · <a href="{}?volunteer={}&amp;state=all">'
            "their items in the review queue →</a></p>",
            rows,
            everything,
            volunteer.pk,
            volunteer.n_classifications,
            reverse("review:queue"),
            volunteer.pk,
        )


@admin.register(Classification)
class ClassificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Narrow columns, so the list fits 1,400 px beside its filters; the subject is on the page.
    list_display = (
        "zooniverse_id",
        "created",
        "volunteer_short",
        "item_short",
        "ticked",
        "is_duplicate",
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

    @admin.display(description="created", ordering="created_at")
    def created(self, classification: Classification) -> str:
        return when(classification.created_at)

    @admin.display(description="volunteer", ordering="volunteer__key")
    def volunteer_short(self, classification: Classification) -> str:
        return shortened(str(classification.volunteer), 24)

    @admin.display(description="item", ordering="item__external_id")
    def item_short(self, classification: Classification) -> str:
        return shortened(str(classification.item), 28) if classification.item else "–"

    @admin.display(description="concepts ticked")
    def ticked(self, classification: Classification) -> str:
        keys = getattr(self, "_concept_keys", None)
        if keys is None:
            keys = self._concept_keys = dict(Concept.objects.values_list("id", "key"))
        names = [keys.get(cid, f"#{cid}") for cid in classification.concept_ids or []]
        return shortened(", ".join(names), 40) or "none"


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
    list_display = ("item", "concept", "posterior_rounded", "votes_for", "votes_against", "method")
    list_filter = ("method", "concept")
    list_select_related = ("item", "concept")
    search_fields = ("item__external_id",)
    show_full_result_count = False
    fields = ("item", "concept", "posterior_rounded", "votes_for", "votes_against", "method",
              "updated_at")

    @admin.display(description="posterior", ordering="posterior")
    def posterior_rounded(self, label: AggregatedLabel) -> str:
        return rounded(label.posterior)


@admin.register(VolunteerSkill)
class VolunteerSkillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "volunteer", "concept", "sensitivity_rounded", "specificity_rounded", "n_votes"
    )
    list_filter = ("concept",)
    list_select_related = ("volunteer", "concept")
    search_fields = ("volunteer__user_name", "volunteer__key")
    show_full_result_count = False
    fields = ("volunteer", "concept", "sensitivity_rounded", "specificity_rounded", "n_votes",
              "updated_at")

    @admin.display(description="sensitivity", ordering="sensitivity")
    def sensitivity_rounded(self, skill: VolunteerSkill) -> str:
        return rounded(skill.sensitivity)

    @admin.display(description="specificity", ordering="specificity")
    def specificity_rounded(self, skill: VolunteerSkill) -> str:
        return rounded(skill.specificity)


@admin.register(VolunteerExclusion)
class VolunteerExclusionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit of exclusions from aggregation: every change, as it was made."""

    list_display = ("created_at", "volunteer", "what", "by", "reason_short")
    list_filter = ("excluded",)
    list_select_related = ("volunteer", "by")
    search_fields = ("volunteer__key", "volunteer__user_name", "reason")
    date_hierarchy = "created_at"

    @admin.display(description="what", ordering="excluded")
    def what(self, exclusion: VolunteerExclusion) -> str:
        return "excluded" if exclusion.excluded else "taken back"

    @admin.display(description="reason")
    def reason_short(self, exclusion: VolunteerExclusion) -> str:
        return shortened(exclusion.reason, 80)


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
        from django.http import Http404

        from annotate.views import release_file_response

        release = DatasetRelease.objects.filter(pk=pk).first()
        if release is None or not self.has_view_permission(request, release):
            raise Http404("no such release")
        try:
            return release_file_response(release, what)
        except FileNotFoundError as exc:
            raise Http404(str(exc)) from exc
