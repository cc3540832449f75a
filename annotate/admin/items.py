"""Items with their images, identity changes and labels, and the vocabulary of concepts they are
labelled with."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from annotate.admin.common import (
    ReadOnlyAdminMixin,
    confirmation_page,
    rounded,
    shortened,
    thumbnail_html,
    when,
)
from annotate.models import AggregatedLabel, Concept, Item, PriorLabel
from annotate.roles import signed_in
from annotate.services.item_images import item_image_src


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
        return (
            format_html_join(
                " ", '<span class="cl-flag" title="{}">{}</span>', ((titles[n], n) for n in names)
            )
            or "–"
        )

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
        accepted = reviews_bulk_accept(items_qs=queryset, curator=signed_in(request.user))
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


@admin.register(AggregatedLabel)
class AggregatedLabelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("item", "concept", "posterior_rounded", "votes_for", "votes_against", "method")
    list_filter = ("method", "concept")
    list_select_related = ("item", "concept")
    search_fields = ("item__external_id",)
    show_full_result_count = False
    fields = (
        "item",
        "concept",
        "posterior_rounded",
        "votes_for",
        "votes_against",
        "method",
        "updated_at",
    )

    @admin.display(description="posterior", ordering="posterior")
    def posterior_rounded(self, label: AggregatedLabel) -> str:
        return rounded(label.posterior)
