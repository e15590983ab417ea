"""The bell's feed API (``/api/v1/inbox/feed``): what ``<notify-inbox>`` reads.

Items one by one, newest first, paged by an opaque cursor that stays right
while new items arrive (``notify.inbox.feed``); filters for unread, archived
and category; the unread and total counts; mark read / unread / all read,
archive / unarchive; and a live stream of new items and of the unread count
(``/events``, server-sent events from ``notify.inbox.live``). Callers are the
session user or the holder of a signed per-user token, from this origin or
one in ``NOTIFY["BELL_ALLOWED_ORIGINS"]`` (``notify.api.bell_auth``).

Every query starts from the caller's user id: another user's item is a 404.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie
from pydantic import ValidationError as PydanticValidationError

from notify.api import bell_auth
from notify.api.errors import ApiError, api_view, error_response, field_error, from_pydantic
from notify.api.ratelimit import check, client_address, limited_per_address
from notify.api.schemas import FeedQuery
from notify.inbox import feed, live
from notify.inbox.actions import safe_link
from notify.models import Category, Notification

# The query's archived=false|true|all -> notify.inbox.feed's names.
ARCHIVED: dict[str, feed.Archived] = {"false": "exclude", "true": "only", "all": "include"}


def feed_item_json(item: Notification) -> dict[str, Any]:
    return {
        "id": item.pk,
        "title": item.title,
        "body": item.body,
        "url": safe_link(item.url),
        "category": item.category.key,
        "category_name": item.category.name,
        "created_at": item.inbox_at,
        "read": item.read_at is not None,
        "read_at": item.read_at,
        "archived": item.archived_at is not None,
        "archived_at": item.archived_at,
        "actions": [a for a in item.actions or [] if safe_link(a.get("url", ""))],
    }


def feed_filter(query: FeedQuery) -> feed.FeedFilter:
    if query.category and not Category.objects.filter(key=query.category).exists():
        raise field_error("category", f"no category '{query.category}'")
    return feed.FeedFilter(
        unread=query.unread, archived=ARCHIVED[query.archived], category=query.category
    )


def bell_endpoint(*methods: str):
    """CORS outermost, then JSON errors, the per-address limit, then who calls."""

    def decorate(view):
        wrapped = api_view(*methods)(limited_per_address(bell_auth.bell_user(view)))
        if "GET" in methods:  # a same-origin script that reads the feed can then POST
            wrapped = ensure_csrf_cookie(wrapped)
        return bell_auth.cors(wrapped)

    return decorate


@bell_endpoint("GET")
def feed_list(request: HttpRequest) -> JsonResponse:
    """One page of the feed, its counts, and the live stream's starting point."""
    try:
        query = FeedQuery.model_validate(request.GET.dict())
    except PydanticValidationError as exc:
        raise from_pydantic(exc) from None
    wanted = feed_filter(query)
    try:
        after = feed.FeedCursor.decode(query.cursor) if query.cursor is not None else None
    except feed.BadCursor as exc:
        raise field_error("cursor", f"{exc}; pass a next_cursor exactly as received") from None
    user_id = request.bell_user_id
    # Taken before the listing: the stream then pushes whatever lands after it.
    live_cursor = live.Cursor(timezone.now()).encode()
    found = feed.page(user_id, wanted, after, query.limit)
    body: dict[str, Any] = {
        "items": [feed_item_json(item) for item in found.items],
        "next_cursor": found.next_cursor,
        "counts": feed.counts(user_id, wanted),
    }
    if after is None:
        body["live_cursor"] = live_cursor
    return JsonResponse(body)


def own(request: HttpRequest, item_id: int) -> Notification:
    item = feed.own_item(request.bell_user_id, item_id)
    if item is None:
        raise ApiError(404, "not_found", f"No item {item_id} in your inbox.")
    return item


def changed(request: HttpRequest, item_id: int) -> JsonResponse:
    user_id = request.bell_user_id
    item = own(request, item_id)
    return JsonResponse(
        {"item": feed_item_json(item), "counts": feed.counts(user_id, feed.FeedFilter())}
    )


@bell_endpoint("POST")
def mark_read(request: HttpRequest, item_id: int) -> JsonResponse:
    feed.set_read(request.bell_user_id, [own(request, item_id).pk], read=True)
    return changed(request, item_id)


@bell_endpoint("POST")
def mark_unread(request: HttpRequest, item_id: int) -> JsonResponse:
    feed.set_read(request.bell_user_id, [own(request, item_id).pk], read=False)
    return changed(request, item_id)


@bell_endpoint("POST")
def archive(request: HttpRequest, item_id: int) -> JsonResponse:
    feed.set_archived(request.bell_user_id, [own(request, item_id).pk], archived=True)
    return changed(request, item_id)


@bell_endpoint("POST")
def unarchive(request: HttpRequest, item_id: int) -> JsonResponse:
    feed.set_archived(request.bell_user_id, [own(request, item_id).pk], archived=False)
    return changed(request, item_id)


@bell_endpoint("POST")
def mark_all_read(request: HttpRequest) -> JsonResponse:
    category = request.GET.get("category") or None
    if category and not Category.objects.filter(key=category).exists():
        raise field_error("category", f"no category '{category}'")
    user_id = request.bell_user_id
    updated = feed.mark_all_read(user_id, category)
    return JsonResponse({"updated": updated, "counts": feed.counts(user_id, feed.FeedFilter())})


# -- the live stream ------------------------------------------------------------------


def stream_payloads(items: list[Notification]) -> list[dict[str, Any]]:
    return [feed_item_json(item) for item in items]


def stream_user(request: HttpRequest) -> int:
    """Who the stream is for: ``?token=`` (``EventSource`` sends no headers),
    a bearer token, or the session. Raises ``ApiError`` (401, 429)."""
    check("API_RATE_LIMIT_PER_ADDRESS", client_address(request))
    token = request.GET.get("token") or bell_auth.bearer(request)
    if token:
        return bell_auth.user_from_token(token)
    if request.user.is_authenticated:
        return request.user.pk
    raise bell_auth.unauthorized("Sign in, or pass a bell token as ?token= on the stream.")


async def feed_events(request: HttpRequest) -> HttpResponse:
    """Server-sent events for the caller's feed: ``item`` (one feed item, its
    ``id`` the resume point) and ``unread`` (``{"unread_count": n}``)."""
    if request.method == "OPTIONS":
        return await sync_to_async(bell_auth.preflight)(request)
    if request.method != "GET":
        response: HttpResponse = error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; use GET.",
            headers={"Allow": "GET"},
        )
        return bell_auth.add_cors_headers(request, response)
    try:
        user_id = await sync_to_async(stream_user)(request)
    except ApiError as exc:
        return await sync_to_async(bell_auth.add_cors_headers)(request, exc.response())
    after = live.Cursor.decode(request.headers.get("Last-Event-ID")) or live.Cursor.decode(
        request.GET.get("after")
    )
    if isinstance(request, ASGIRequest):
        events = live.stream(user_id, after, stream_payloads)
    else:
        # WSGI would buffer an endless body: one round, then the browser
        # reconnects after the retry delay (long polling).
        events = [c async for c in live.stream(user_id, after, stream_payloads, once=True)]
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return await sync_to_async(bell_auth.add_cors_headers)(request, response)
