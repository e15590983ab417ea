"""The API's URLs, included by ``notify/project/urls.py`` under ``api/v1/`` (namespace
``api``). The catch-all comes last so unknown API URLs answer in JSON too."""

from django.urls import path, re_path

from notify.api import batch, devices, errors, events, feed, inbox, openapi, preferences, runs

app_name = "api"

urlpatterns = [
    path("events", events.create_event, name="events"),
    path("events/batch", batch.create_events, name="events-batch"),
    path("events/<int:event_id>", events.event_detail, name="event-detail"),
    path("runs/<int:run_id>/cancel", runs.cancel_run, name="run-cancel"),
    # Any printable key, slashes included (percent-encode what a URL cannot carry).
    path("events/by-key/<path:idempotency_key>", events.cancel_event, name="event-cancel"),
    path("inbox", inbox.inbox_list, name="inbox"),
    path("inbox/read-all", inbox.mark_all_read, name="inbox-read-all"),
    path("inbox/<int:item_id>/read", inbox.mark_read, name="inbox-read"),
    path("inbox/<int:item_id>/unread", inbox.mark_unread, name="inbox-unread"),
    path("inbox/feed", feed.feed_list, name="feed"),
    path("inbox/feed/events", feed.feed_events, name="feed-events"),
    path("inbox/feed/read-all", feed.mark_all_read, name="feed-read-all"),
    path("inbox/feed/<int:item_id>/read", feed.mark_read, name="feed-read"),
    path("inbox/feed/<int:item_id>/unread", feed.mark_unread, name="feed-unread"),
    path("inbox/feed/<int:item_id>/archive", feed.archive, name="feed-archive"),
    path("inbox/feed/<int:item_id>/unarchive", feed.unarchive, name="feed-unarchive"),
    path("preferences", preferences.preferences, name="preferences"),
    path("devices", devices.devices, name="devices"),
    path("openapi.json", openapi.openapi_json, name="openapi"),
    re_path(r"^", errors.not_found, name="not-found"),
]
