"""What the crowd side's admin screens share: list columns for reading (numbers, dates, cut text,
thumbnails), the page that asks before an action, and the mixin of read-only records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html

from annotate.models import Item
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
