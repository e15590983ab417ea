from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("dev/outbox/", views.sandbox_outbox, name="sandbox-outbox"),
    path("api/v1/", include("notify.api.urls")),
    path("admin/", admin.site.urls),
]
