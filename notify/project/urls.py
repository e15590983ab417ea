from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from notify.api import docs as api_docs
from notify.dev import sandbox_outbox
from notify.observability import views
from notify.pages import click as click_pages
from notify.pages import home as home_page
from notify.pages import inbox as inbox_pages
from notify.pages import unsubscribe as unsubscribe_pages
from notify.pages.throttle import throttled_login, throttled_page

urlpatterns = [
    path("", home_page.home, name="home"),
    # Browsers ask for /favicon.ico on pages that name no icon (admin's).
    path("favicon.ico", RedirectView.as_view(url=static("notify/favicon.svg"), permanent=True)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("dev/outbox/", sandbox_outbox.sandbox_outbox, name="sandbox-outbox"),
    path("r/<str:token>", click_pages.click, name="click"),
    path("inbox/", inbox_pages.inbox_page, name="inbox"),
    path("inbox/events", inbox_pages.inbox_events, name="inbox-events"),
    path("inbox/read-all", inbox_pages.mark_all_read, name="inbox-read-all"),
    path("inbox/<int:item_id>/read", inbox_pages.mark_read, name="inbox-read"),
    path("inbox/<int:item_id>/unread", inbox_pages.mark_unread, name="inbox-unread"),
    path(
        "unsubscribe/<str:token>/",
        throttled_page("unsubscribe")(unsubscribe_pages.unsubscribe),
        name="unsubscribe",
    ),
    # Failed sign-ins throttled per username and per address (notify.pages.throttle).
    path("accounts/login/", throttled_login(auth_views.LoginView.as_view()), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/notifications/", include("notify.pages.urls")),
    path("api/docs/", api_docs.api_docs, name="api-docs"),
    path("api/v1/", include("notify.api.urls")),
    path("webhooks/", include("notify.webhooks.urls")),
    path("admin/login/", throttled_login(admin.site.login)),  # before admin's own URLs
    path("admin/", admin.site.urls),
]
