"""The curator's review screens, inside the admin's look: queue, item, plots.

Views are thin: check who is asking, parse the input with a form, call one selector or service,
render. Staff members who may view items can look at everything here; only those with
``annotate.add_review`` may decide (anyone else gets 403 on POST).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate import plots, selectors
from annotate.admin import image_src
from annotate.models import Concept, Item, Review
from annotate.services.review import COMMENT_MAX_LENGTH, review_record, reviews_bulk_accept

VIEW_PERMISSION = "annotate.view_item"
REVIEW_PERMISSION = "annotate.add_review"
QUEUE_PAGE_SIZE = 50


def can_view(request: HttpRequest) -> bool:
    return (
        request.user.is_active and request.user.is_staff and request.user.has_perm(VIEW_PERMISSION)
    )


def can_review(request: HttpRequest) -> bool:
    return can_view(request) and request.user.has_perm(REVIEW_PERMISSION)


class QueueFilterForm(forms.Form):
    """The queue's filters: an allowlist, never passed to the ORM as they come."""

    concept = forms.ChoiceField(required=False)
    state = forms.ChoiceField(
        required=False,
        choices=[(state, state) for state in selectors.QUEUE_STATES],
        initial="unreviewed",
    )

    def __init__(self, *args, concepts: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["concept"].choices = [("", "any concept"), *concepts]

    def filters(self) -> dict[str, str]:
        """The valid filters, defaults for anything missing or invalid."""
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "concept": data.get("concept") or "",
            "state": data.get("state") or "unreviewed",
        }


class BulkAcceptForm(forms.Form):
    min_confidence = forms.FloatField(min_value=0.51, max_value=1.0, initial=0.95)


class DecisionForm(forms.Form):
    action = forms.ChoiceField(choices=Review.Action.choices)
    # Django's CharField already refuses NUL characters; the service checks again for other callers.
    comment = forms.CharField(required=False, max_length=COMMENT_MAX_LENGTH, strip=True)


def _queue_filters(request: HttpRequest, concepts: list[tuple[str, str]]) -> dict[str, str]:
    return QueueFilterForm(request.GET, concepts=concepts).filters()


def _filters_query(filters: dict[str, str]) -> str:
    """The filters as a query string, defaults left out, so links keep the curator's queue."""
    kept = {}
    if filters.get("concept"):
        kept["concept"] = filters["concept"]
    if filters.get("state", "unreviewed") != "unreviewed":
        kept["state"] = filters["state"]
    return urlencode(kept)


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _concept_choices() -> list[tuple[str, str]]:
    return list(Concept.objects.filter(active=True).values_list("key", "label"))


def _context(request: HttpRequest, **extra) -> dict:
    # The admin's own context (site header, sidebar, user tools) so these pages look like it.
    return {**admin.site.each_context(request), **extra}


@staff_member_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    concepts = _concept_choices()
    filter_form = QueueFilterForm(request.GET, concepts=concepts)
    filters = filter_form.filters()
    items = selectors.review_queue(concept=filters["concept"] or None, state=filters["state"])
    page = Paginator(items, QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
    # Without a thumbnail yet, our stored copy scaled down beats "no image".
    rows = [(item, image_src(item) or image_src(item, large=True)) for item in page.object_list]
    query = _filters_query(filters)
    return render(
        request,
        "review/queue.html",
        _context(
            request,
            title="Review queue",
            filter_form=filter_form,
            filters=filters,
            filters_query=query,
            bulk_form=BulkAcceptForm(),
            page_obj=page,
            rows=rows,
            can_review=can_review(request),
        ),
    )


@staff_member_required
@require_POST
def bulk_accept(request: HttpRequest) -> HttpResponse:
    if not can_review(request):
        raise PermissionDenied
    filters = _queue_filters(request, _concept_choices())
    form = BulkAcceptForm(request.POST)
    back = _with_query(reverse("review:queue"), _filters_query(filters))
    if not form.is_valid():
        messages.error(request, "Bulk accept needs a confidence above 0.5 and at most 1.")
        return redirect(back)
    accepted = reviews_bulk_accept(
        items_qs=selectors.review_queue(concept=filters["concept"] or None, state="unreviewed"),
        curator=request.user,
        min_confidence=form.cleaned_data["min_confidence"],
    )
    messages.success(request, f"Accepted the crowd's label on {accepted} settled items.")
    return redirect(back)


@staff_member_required
@require_http_methods(["GET", "POST"])
def item(request: HttpRequest, pk: int) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    if request.method == "POST" and not can_review(request):
        raise PermissionDenied
    obj = get_object_or_404(Item, pk=pk)
    filters = _queue_filters(request, _concept_choices())
    query = _filters_query(filters)
    previous_id, next_id = selectors.review_queue_neighbours(
        item=obj, concept=filters["concept"] or None, state=filters["state"]
    )
    form = DecisionForm(request.POST or None)
    error = ""
    if request.method == "POST":
        if form.is_valid():
            action = form.cleaned_data["action"]
            edit = action == Review.Action.EDIT
            try:
                review_record(
                    item=obj,
                    curator=request.user,
                    action=action,
                    concepts=request.POST.getlist("concepts") if edit else None,
                    comment=form.cleaned_data["comment"],
                )
            except ValueError as exc:
                error = str(exc)
            else:
                messages.success(request, f"{obj.external_id}: {action} recorded.")
                if next_id is None:
                    return redirect(_with_query(reverse("review:queue"), query))
                return redirect(_with_query(reverse("review:item", args=[next_id]), query))
        else:
            error = "; ".join(message for errors in form.errors.values() for message in errors)

    context = selectors.item_review_context(obj)
    return render(
        request,
        "review/item.html",
        _context(
            request,
            title=f"Review {obj.external_id}",
            item=obj,
            review=context,
            image=image_src(obj, large=True),
            previous_id=previous_id,
            next_id=next_id,
            filters_query=query,
            form=form,
            error=error,
            can_review=can_review(request),
            comment_max_length=COMMENT_MAX_LENGTH,
        ),
        status=400 if error else 200,
    )


@staff_member_required
@require_GET
def plots_page(request: HttpRequest) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    return render(
        request,
        "review/plots.html",
        _context(request, title="Crowd plots", plots=plots.PLOTS),
    )


@staff_member_required
@require_GET
def plot_png(request: HttpRequest, name: str) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    if name not in plots.PLOTS:
        raise Http404("no such plot")
    response = HttpResponse(plots.plot_png(name), content_type="image/png")
    # Drawn from live data on each request; a cached copy would show yesterday's crowd.
    response["Cache-Control"] = "no-store"
    return response
