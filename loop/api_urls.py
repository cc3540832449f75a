from __future__ import annotations

from django.urls import path

from loop import api

urlpatterns = [
    path("loop/", api.LoopStatusApi.as_view(), name="api-loop"),
]
