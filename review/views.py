"""The curator's review screens, inside the admin's look: queue, item, decisions (and their
undo), plots.

Views are thin: check who is asking, parse the input with a form, call one selector or service,
render. Staff members who may view items can look at everything here; only those with
``annotate.add_review`` may decide (anyone else gets 403 on POST).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate import plots, selectors
from annotate.models import Concept, Item, Review, Round, Volunteer
from annotate.roles import signed_in
from annotate.selectors import review_history
from annotate.services.item_images import item_image_src
from annotate.services.review import (
    COMMENT_MAX_LENGTH,
    DECISIONS,
    UndoError,
    review_record,
    review_undo,
    reviews_bulk_accept,
    reviews_undo_batch,
    settled_items,
)
from review import selectors as workbench

VIEW_PERMISSION = "annotate.view_item"
REVIEW_PERMISSION = "annotate.add_review"
QUEUE_PAGE_SIZE = 50
GRID_PAGE_SIZE = 48


def can_view(request: HttpRequest) -> bool:
    return (
        request.user.is_active and request.user.is_staff and request.user.has_perm(VIEW_PERMISSION)
    )


def can_review(request: HttpRequest) -> bool:
    return can_view(request) and request.user.has_perm(REVIEW_PERMISSION)


def _curator(request: HttpRequest) -> User:
    """The signed-in curator deciding: every view that records or undoes a decision is behind
    ``staff_member_required`` and ``can_review``, so ``request.user`` is never anonymous there."""
    return signed_in(request.user)


class QueueFilterForm(forms.Form):
    """The queue's filters: an allowlist, never passed to the ORM as they come."""

    state = forms.ChoiceField(
        required=False,
        choices=[(state, state) for state in selectors.QUEUE_STATES],
        initial="unreviewed",
    )
    consensus = forms.ChoiceField(
        required=False, choices=[("", "any consensus"), *Item.Consensus.choices]
    )
    flag = forms.ChoiceField(
        required=False,
        choices=[
            ("", "any flag"),
            ("model", "model vs crowd"),
            ("prior", "crowd vs prior"),
            ("either", "either conflict"),
        ],
    )
    concept = forms.SlugField(required=False, max_length=64)
    round = forms.IntegerField(required=False, min_value=1)
    volunteer = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    votes = forms.ChoiceField(
        required=False,
        choices=[("with", "with votes"), ("without", "without votes"), ("all", "with or without")],
        initial="with",
    )
    view = forms.ChoiceField(
        required=False, choices=[("list", "list"), ("grid", "grid")], initial="list"
    )

    def __init__(self, *args, concepts: list[tuple[str, str]] | None = None, **kwargs) -> None:
        """``concepts``: the active vocabulary, for a page that shows the filters as menus (the
        queue); without it the concept and round are only checked for their form (the item
        screen, which passes the filters on and costs no query for the menus)."""
        super().__init__(*args, **kwargs)
        if concepts is None:
            return
        self.fields["concept"] = forms.ChoiceField(
            required=False, choices=[("", "any concept"), *concepts]
        )
        self.fields["round"] = forms.TypedChoiceField(
            required=False,
            coerce=int,
            empty_value=None,
            choices=[
                ("", "any round"),
                *(
                    (n, f"round {n}: {name}")
                    for n, name in Round.objects.values_list("number", "name")
                ),
            ],
        )

    def filters(self) -> selectors.QueueFilters:
        """The valid filters; defaults for anything missing, invalid filters are dropped."""
        self.is_valid()
        data = {
            name: self.cleaned_data.get(name) for name in self.fields if name not in self.errors
        }
        return selectors.QueueFilters(
            state=data.get("state") or "unreviewed",
            concept=data.get("concept") or None,
            consensus=data.get("consensus") or None,
            flag=data.get("flag") or None,
            round=data.get("round"),
            volunteer=data.get("volunteer"),
            votes=data.get("votes") or "with",
        )

    def invalid(self) -> list[str]:
        """Names of the filters in the query string that were not understood (and ignored)."""
        return sorted(name for name in self.errors if self.data.get(name))


class BulkAcceptForm(forms.Form):
    min_confidence = forms.FloatField(min_value=0.51, max_value=1.0, initial=0.95)
    confirm = forms.BooleanField(required=False)


class DecisionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[(a, label) for a, label in Review.Action.choices if a in DECISIONS]
    )
    # Django's CharField already refuses NUL characters; the service checks again for other callers.
    comment = forms.CharField(required=False, max_length=COMMENT_MAX_LENGTH, strip=True)


_DEFAULTS = {"state": "unreviewed", "votes": "with", "view": "list"}


def _filters_query(filters: selectors.QueueFilters, *, view: str = "list", **extra) -> str:
    """The filters as a query string, defaults left out, so links keep the curator's queue."""
    kept = {
        name: value
        for name, value in {**asdict(filters), "view": view}.items()
        if value not in (None, "") and _DEFAULTS.get(name) != value
    }
    kept.update({k: v for k, v in extra.items() if v is not None})
    return urlencode(kept)


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _concept_choices() -> list[tuple[str, str]]:
    return list(Concept.objects.filter(active=True).values_list("key", "label"))


def _filter_form(request: HttpRequest, *, menus: bool = False) -> QueueFilterForm:
    return QueueFilterForm(request.GET, concepts=_concept_choices() if menus else None)


def admin_frame_context(request: HttpRequest, **extra) -> dict:
    """The admin's frame (site header and title, user tools) so these pages look like it.

    Not ``admin.site.each_context``: that also builds the sidebar's list of every app and model,
    asking the permissions of each, on every request, and these screens hide the sidebar.
    """
    site = admin.site
    script_name = request.META.get("SCRIPT_NAME", "")
    return {
        "site_title": site.site_title,
        "site_header": site.site_header,
        "site_url": script_name if site.site_url == "/" and script_name else site.site_url,
        "has_permission": site.has_permission(request),
        "available_apps": [],
        "is_popup": False,
        "is_nav_sidebar_enabled": False,
        **extra,
    }


def _view_of(form: QueueFilterForm) -> str:
    """ "list" or "grid"; a view the form refused is the list."""
    if "view" in form.errors:
        return "list"
    return form.cleaned_data.get("view") or "list"


@staff_member_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    filter_form = _filter_form(request, menus=True)
    filters = filter_form.filters()
    view = _view_of(filter_form)
    try:
        items = selectors.review_queue(filters)
    except ValueError as exc:  # a concept deleted since the link was made
        messages.error(request, str(exc))
        return redirect("review:queue")
    page = Paginator(items, GRID_PAGE_SIZE if view == "grid" else QUEUE_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    volunteer = (
        Volunteer.objects.filter(pk=filters.volunteer).first() if filters.volunteer else None
    )
    query = _filters_query(filters, view=view)
    return render(
        request,
        "review/queue.html",
        admin_frame_context(
            request,
            title="Review queue",
            filter_form=filter_form,
            filters=filters,
            ignored=filter_form.invalid(),
            filters_query=query,
            item_query=_filters_query(filters),
            list_query=_filters_query(filters, view="list"),
            grid_query=_filters_query(filters, view="grid"),
            view=view,
            volunteer=volunteer,
            drop_volunteer_query=_filters_query(replace(filters, volunteer=None), view=view),
            bulk_form=BulkAcceptForm(),
            page_obj=page,
            rows=workbench.queue_rows(list(page.object_list)),
            can_review=can_review(request),
        ),
    )


@staff_member_required
@require_POST
def bulk_accept(request: HttpRequest) -> HttpResponse:
    """Bulk accept in two steps: the first POST shows how many items would be accepted and asks
    for confirmation; the second (``confirm``) accepts them, with a link to undo the batch."""
    if not can_review(request):
        raise PermissionDenied
    filters = replace(_filter_form(request).filters(), state="unreviewed")
    item_query = _filters_query(filters)
    back = _with_query(reverse("review:queue"), item_query)
    form = BulkAcceptForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Bulk accept needs a confidence above 0.5 and at most 1.")
        return redirect(back)
    min_confidence = form.cleaned_data["min_confidence"]
    try:
        items = selectors.review_queue(filters)
    except ValueError as exc:  # a concept in the link that is gone
        messages.error(request, str(exc))
        return redirect(back)
    if not form.cleaned_data["confirm"]:
        count = settled_items(items_qs=items, min_confidence=min_confidence).count()
        return render(
            request,
            "review/bulk_confirm.html",
            admin_frame_context(
                request,
                title="Bulk accept: confirm",
                count=count,
                min_confidence=min_confidence,
                filters=filters,
                item_query=item_query,
                back=back,
            ),
        )
    batch = uuid.uuid4()
    accepted = reviews_bulk_accept(
        items_qs=items, curator=_curator(request), min_confidence=min_confidence, batch=batch
    )
    if accepted:
        messages.success(
            request,
            format_html(
                'Accepted the crowd\'s label on {} settled items. <a href="{}">Undo this bulk '
                "accept</a> from the decisions page.",
                accepted,
                reverse("review:decisions") + f"?batch={batch}",
            ),
        )
    else:
        messages.info(request, "No settled items were left to accept.")
    return redirect(back)


@staff_member_required
@require_http_methods(["GET", "POST"])
def item(request: HttpRequest, pk: int) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    if request.method == "POST" and not can_review(request):
        raise PermissionDenied
    obj = get_object_or_404(Item, pk=pk)
    filters = _filter_form(request).filters()
    try:
        previous_id, next_id = selectors.review_queue_neighbours(item=obj, filters=filters)
    except ValueError:  # a concept in the link that is gone: the queue without that filter
        filters = replace(filters, concept=None)
        previous_id, next_id = selectors.review_queue_neighbours(item=obj, filters=filters)
    query = _filters_query(filters)
    # After a decision the next item opens with ?from=<the item decided>: "previous" (k) goes
    # back to it, though it has left the queue's state.
    came_from = request.GET.get("from", "")
    if came_from.isdigit() and Item.objects.filter(pk=int(came_from)).exists():
        previous_id = int(came_from)
    form = DecisionForm(request.POST or None)
    error = ""
    if request.method == "POST":
        if form.is_valid():
            action = form.cleaned_data["action"]
            edit = action == Review.Action.EDIT
            try:
                review_record(
                    item=obj,
                    curator=_curator(request),
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
                # Any: "from" is not ``view``, the one keyword the function names.
                after: dict[str, Any] = {"from": obj.pk}
                following = _filters_query(filters, **after)
                return redirect(_with_query(reverse("review:item", args=[next_id]), following))
        else:
            error = "; ".join(
                # ErrorList yields each message as a str: its __getitem__ unwraps ValidationError.
                message  # type: ignore[misc]  # the stubs type its items ValidationError | str
                for errors in form.errors.values()
                for message in errors
            )

    bench = workbench.item_workbench(obj)
    return render(
        request,
        "review/item.html",
        admin_frame_context(
            request,
            title=f"Review {obj.external_id}",
            item=obj,
            review=bench.crowd,
            bench=bench,
            has_model=bench.has_model,
            explained=bench.explained,
            flag_thresholds=workbench.thresholds(),
            image=item_image_src(obj, large=True),
            previous_id=previous_id,
            next_id=next_id,
            filters_query=query,
            form=form,
            error=error,
            can_review=can_review(request),
            comment_max_length=COMMENT_MAX_LENGTH,
            has_prior=any(row.crowd.prior for row in bench.rows),
        ),
        status=400 if error else 200,
    )


@staff_member_required
@require_GET
def item_votes(request: HttpRequest, pk: int) -> JsonResponse:
    """Who voted what on the item, each volunteer with their skill per concept: the item
    screen's vote lists, fetched when a curator first opens one."""
    if not can_view(request):
        raise PermissionDenied
    obj = get_object_or_404(Item, pk=pk)
    queue_url = reverse("review:queue")
    return JsonResponse(
        workbench.item_votes_document(
            obj,
            volunteer_url=lambda pk: reverse("admin:annotate_volunteer_change", args=[pk]),
            queue_url=lambda pk: f"{queue_url}?volunteer={pk}&state=all",
        )
    )


@staff_member_required
@require_GET
def decisions(request: HttpRequest) -> HttpResponse:
    """The decisions of every curator, newest first, bulk ones grouped: each can be undone."""
    if not can_view(request):
        raise PermissionDenied
    batch = request.GET.get("batch", "")
    try:
        batch_uuid = uuid.UUID(batch) if batch else None
    except ValueError:
        batch_uuid = None
        messages.error(request, f"{batch!r} is not a bulk decision's id.")
    page = Paginator(review_history(batch=batch_uuid), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "review/decisions.html",
        admin_frame_context(
            request,
            title="Decisions",
            page_obj=page,
            batch=batch_uuid,
            bulk=selectors.bulk_decisions() if batch_uuid is None else [],
            can_review=can_review(request),
        ),
    )


@staff_member_required
@require_POST
def undo(request: HttpRequest, pk: int) -> HttpResponse:
    """Undo one decision (from the item's history or the decisions page)."""
    if not can_review(request):
        raise PermissionDenied
    review = get_object_or_404(Review.objects.select_related("item"), pk=pk)
    try:
        review_undo(review=review, curator=_curator(request))
    except UndoError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"{review.item.external_id}: {review.action} #{review.pk} undone; the item is "
            f"{Item.objects.get(pk=review.item_id).get_review_state_display()} again.",
        )
    return redirect(_safe_next(request, reverse("review:item", args=[review.item_id])))


@staff_member_required
@require_POST
def undo_batch(request: HttpRequest, batch: uuid.UUID) -> HttpResponse:
    """Undo every decision of a bulk accept that can still be undone."""
    if not can_review(request):
        raise PermissionDenied
    try:
        result = reviews_undo_batch(batch=batch, curator=_curator(request))
    except LookupError as exc:
        raise Http404(str(exc)) from exc
    left = "; ".join(f"{n} left as they are: {reason}" for reason, n in result.skipped.items())
    messages.success(
        request,
        f"Undid {result.undone} decisions of the bulk accept." + (f" {left}." if left else ""),
    )
    return redirect(reverse("review:decisions") + f"?batch={batch}")


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@staff_member_required
@require_GET
def plots_page(request: HttpRequest) -> HttpResponse:
    if not can_view(request):
        raise PermissionDenied
    return render(
        request,
        "review/plots.html",
        admin_frame_context(request, title="Crowd plots", plots=plots.PLOTS),
    )


@staff_member_required
@require_GET
def plot_png(request: HttpRequest, name: str, board: str = "review") -> HttpResponse:
    """Any plot registered in :mod:`annotate.plots`, by board (set by the URL) and name."""
    if not can_view(request):
        raise PermissionDenied
    if name not in plots.plot_names(board):
        raise Http404("no such plot")
    response = HttpResponse(plots.plot_png(name, board=board), content_type="image/png")
    # Drawn from live data on each request; a cached copy would show yesterday's crowd.
    response["Cache-Control"] = "no-store"
    return response
