"""Thin views: parse input, call a service or selector, render."""

from __future__ import annotations

from django.db import connection
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from annotate.models import DatasetRelease


def healthz(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


def release_file_response(release: DatasetRelease, what: str) -> FileResponse:
    """One file of a written release as an attachment (the admin's and the API's download): named
    from our ids and the format, typed by the format, never sniffed by the browser.

    Raises:
        FileNotFoundError: no such file in this release (see ``release_file_path``); the caller
            answers 404 in its own way.
    """
    from annotate.services.releases import (
        CONTENT_TYPES,
        release_download_name,
        release_file_path,
    )

    path = release_file_path(release, what)
    response = FileResponse(
        path.open("rb"), as_attachment=True, filename=release_download_name(release, what)
    )
    response["Content-Type"] = CONTENT_TYPES[what]
    response["X-Content-Type-Options"] = "nosniff"
    return response
