"""The API's URLs, included by ``notify/project/urls.py`` under ``api/v1/`` (namespace
``api``). The catch-all comes last so unknown API URLs answer in JSON too."""

from django.urls import path, re_path

from notify.api import batch, devices, errors, events, inbox, openapi, preferences

app_name = "api"

urlpatterns = [
    path("events", events.create_event, name="events"),
    path("events/batch", batch.create_events, name="events-batch"),
    path("events/<int:event_id>", events.event_detail, name="event-detail"),
    # Any printable key, slashes included (percent-encode what a URL cannot carry).
    path("events/by-key/<path:idempotency_key>", events.cancel_event, name="event-cancel"),
    path("inbox", inbox.inbox_list, name="inbox"),
    path("inbox/read-all", inbox.mark_all_read, name="inbox-read-all"),
    path("inbox/<int:item_id>/read", inbox.mark_read, name="inbox-read"),
    path("inbox/<int:item_id>/unread", inbox.mark_unread, name="inbox-unread"),
    path("preferences", preferences.preferences, name="preferences"),
    path("devices", devices.devices, name="devices"),
    path("openapi.json", openapi.openapi_json, name="openapi"),
    re_path(r"^", errors.not_found, name="not-found"),
]
