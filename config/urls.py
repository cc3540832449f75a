from django.conf import settings
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from django.views.static import serve

from annotate import views as annotate_views

admin.site.site_header = "crowdloop"
admin.site.site_title = "crowdloop"
admin.site.index_title = "Crowd labels and model training"

urlpatterns = [
    path("healthz", annotate_views.healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's names one).
    path("favicon.ico", RedirectView.as_view(url=static("annotate/favicon.ico"))),
    path("admin/", admin.site.urls),
    path("api/v1/", include("annotate.api.urls")),
    path("api/v1/", include("training.api_urls")),
    path("api/v1/", include("loop.api_urls")),
    path("training/", include("training.urls")),
    path("review/", include("review.urls")),
    path("review/", include("loop.urls")),
    path("", annotate_views.home, name="home"),
]

if settings.SERVE_MEDIA:
    urlpatterns += [
        re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
    ]
