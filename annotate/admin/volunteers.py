"""Volunteers and their classifications, skills and exclusions from aggregation."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F, FloatField, Max, OuterRef, QuerySet, Subquery, Sum
from django.db.models.expressions import OrderBy
from django.db.models.functions import Cast, NullIf
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from annotate.admin.common import ReadOnlyAdminMixin, confirmation_page, rounded, shortened, when
from annotate.models import Classification, Concept, Volunteer, VolunteerExclusion, VolunteerSkill

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


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


class SkillAnnotations(TypedDict):
    """What :func:`volunteer_skills` adds to each volunteer."""

    mean_sensitivity: float | None
    mean_specificity: float | None
    skill_votes: int | None


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
    def sensitivity(self, volunteer: WithAnnotations[Volunteer, SkillAnnotations]) -> str:
        return rounded(volunteer.mean_sensitivity)

    @admin.display(description="specificity", ordering=NullsLast("mean_specificity"))
    def specificity(self, volunteer: WithAnnotations[Volunteer, SkillAnnotations]) -> str:
        return rounded(volunteer.mean_specificity)

    @admin.display(description="votes counted", ordering=NullsLast("skill_votes"))
    def votes(self, volunteer: WithAnnotations[Volunteer, SkillAnnotations]) -> int | str:
        counted = volunteer.skill_votes
        return "–" if counted is None else counted

    @admin.display(description="skill (vote-weighted mean over concepts)")
    def skill(self, volunteer: WithAnnotations[Volunteer, SkillAnnotations]) -> str:
        return format_html(
            "sensitivity {} · specificity {} · {} votes counted at the last full aggregation",
            rounded(volunteer.mean_sensitivity),
            rounded(volunteer.mean_specificity),
            volunteer.skill_votes or 0,
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

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ):
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


@admin.register(VolunteerSkill)
class VolunteerSkillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("volunteer", "concept", "sensitivity_rounded", "specificity_rounded", "n_votes")
    list_filter = ("concept",)
    list_select_related = ("volunteer", "concept")
    search_fields = ("volunteer__user_name", "volunteer__key")
    show_full_result_count = False
    fields = (
        "volunteer",
        "concept",
        "sensitivity_rounded",
        "specificity_rounded",
        "n_votes",
        "updated_at",
    )

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
