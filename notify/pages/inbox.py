"""The inbox page: ``/inbox/``, its mark-read forms and its live feed.

Everything works without JavaScript: the page lists the user's entries newest
first, twenty a page (``?page=``), and every change is a plain form POST with a
CSRF token that redirects back (303). ``inbox.js`` enhances it: the same POSTs
over ``fetch`` (answered in JSON with the re-rendered entry) and the live feed
(``/inbox/events``, see ``notify.inbox.live``), which pushes each new entry as the
HTML the page itself would render.

Every item is looked up through ``notify.inbox.store``, which starts from the
session user's id: another user's id is a 404 and changes nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from notify.inbox import live, store
from notify.inbox.actions import safe_link
from notify.models import Notification, UserSettings
from notify.outbox.engagement import mark_seen

PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class Shown:
    """An item as the page shows it: a safe link and its time for people."""

    item: Notification
    title: str
    link: str
    ago: str  # "just now", "5 min ago", "3 h ago", "12 Mar"
    at: str  # the full local time, for the tooltip


@dataclass(frozen=True, slots=True)
class EntryView:
    entry: store.InboxEntry
    shown: Shown
    members: tuple[Shown, ...]


def user_zone(user_id: int) -> tzinfo:
    name = UserSettings.objects.filter(user_id=user_id).values_list("timezone", flat=True).first()
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def ago(when: datetime, now: datetime, zone: tzinfo) -> str:
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    local = timezone.localtime(when, zone)
    if local.year == timezone.localtime(now, zone).year:
        return f"{local.day} {local:%b}"
    return f"{local.day} {local:%b %Y}"


def show(item: Notification, title: str, now: datetime, zone: tzinfo) -> Shown:
    local = timezone.localtime(item.inbox_at, zone)
    return Shown(
        item=item,
        title=title,
        link=safe_link(item.url),
        ago=ago(item.inbox_at, now, zone),
        at=f"{local.day} {local:%B %Y, %H:%M} ({local.tzname()})",
    )


def entry_views(entries: list[store.InboxEntry], zone: tzinfo) -> list[EntryView]:
    now = timezone.now()
    return [
        EntryView(
            entry=entry,
            shown=show(entry.item, entry.title, now, zone),
            members=tuple(show(m, m.title, now, zone) for m in entry.members),
        )
        for entry in entries
    ]


def page_number(request: HttpRequest) -> int:
    try:
        return max(1, int(request.POST.get("page") or request.GET.get("page") or 1))
    except ValueError:
        return 1


def inbox_url(page: int = 1) -> str:
    url = reverse("inbox")
    return f"{url}?page={page}" if page > 1 else url


def render_entry(request: HttpRequest, view: EntryView, page: int = 1) -> str:
    return render_to_string(
        "inbox_entry.html", {"view": view, "page_number": page}, request=request
    )


@login_required
@require_GET
def inbox_page(request: HttpRequest) -> HttpResponse:
    user_id = request.user.pk
    # Taken before the listing: the live feed pushes whatever arrives after it.
    cursor = live.Cursor(timezone.now())
    paginator = Paginator(store.entries(user_id).select_related("category"), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    views = entry_views(store.collapse(user_id, list(page.object_list)), user_zone(user_id))
    mark_seen(item.pk for item in page.object_list)  # shown: a workflow's "seen"
    return render(
        request,
        "inbox.html",
        {
            "active": "inbox",
            "page": page,
            "views": views,
            "unread_count": store.unread_count(user_id),
            "events_url": f"{reverse('inbox-events')}?after={cursor.encode()}",
        },
    )


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def own_item(request: HttpRequest, item_id: int) -> Notification:
    item = store.inbox(request.user.pk).select_related("category").filter(pk=item_id).first()
    if item is None:
        raise Http404("No such item in your inbox.")
    return item


def set_read(request: HttpRequest, item_id: int, read: bool) -> HttpResponse:
    user_id = request.user.pk
    item = own_item(request, item_id)
    # How the entry looked (collapsed or not) is how it keeps looking until reload.
    [entry] = store.collapse(user_id, [item])
    store.mark(user_id, [item.pk], read)
    item.refresh_from_db(fields=["read_at"])
    page = page_number(request)
    if not wants_json(request):
        return HttpResponseRedirect(inbox_url(page), status=303)
    [view] = entry_views([dataclasses.replace(entry, item=item)], user_zone(user_id))
    return JsonResponse(
        {
            "id": item.pk,
            "read": item.read_at is not None,
            "unread_count": store.unread_count(user_id),
            "html": render_entry(request, view, page),
        }
    )


@login_required
@require_POST
def mark_read(request: HttpRequest, item_id: int) -> HttpResponse:
    return set_read(request, item_id, read=True)


@login_required
@require_POST
def mark_unread(request: HttpRequest, item_id: int) -> HttpResponse:
    return set_read(request, item_id, read=False)


@login_required
@require_POST
def mark_all_read(request: HttpRequest) -> HttpResponse:
    user_id = request.user.pk
    store.mark_all_read(user_id)
    page = page_number(request)
    if not wants_json(request):
        return HttpResponseRedirect(inbox_url(page), status=303)
    paginator = Paginator(store.entries(user_id).select_related("category"), PAGE_SIZE)
    listing = paginator.get_page(page)
    views = entry_views(store.collapse(user_id, list(listing.object_list)), user_zone(user_id))
    return JsonResponse(
        {
            "unread_count": store.unread_count(user_id),
            "html": "".join(render_entry(request, v, listing.number) for v in views),
        }
    )


def live_payloads(request: HttpRequest, user_id: int, zone: tzinfo):
    """The ``Render`` of the live feed: one payload per entry the new items
    touch (a group's newest item stands for the group), rendered like the page."""

    def render_new(items: list[Notification]) -> list[dict]:
        newest: dict[str, Notification] = {}
        heads = []
        for item in reversed(items):  # newest first
            if item.group_key and item.read_at is None:
                if item.group_key in newest:
                    continue
                newest[item.group_key] = item
            heads.append(item)
        views = entry_views(store.collapse(user_id, heads), zone)
        return [
            {
                "id": view.entry.item.pk,
                # The client replaces the entry of this group's unread set.
                "group": view.entry.item.group_key if view.entry.item.read_at is None else "",
                "title": view.entry.title,
                "html": render_entry(request, view),
            }
            for view in reversed(views)  # oldest first: the client puts each on top
        ]

    return render_new


@require_GET
async def inbox_events(request: HttpRequest) -> HttpResponse:
    """Server-sent events for the session user's inbox (``notify.inbox.live``)."""
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse(
            "Sign in to get live updates.", status=401, content_type="text/plain; charset=utf-8"
        )
    after = live.Cursor.decode(request.headers.get("Last-Event-ID")) or live.Cursor.decode(
        request.GET.get("after")
    )
    zone = await sync_to_async(user_zone)(user.pk)
    render = live_payloads(request, user.pk, zone)
    if isinstance(request, ASGIRequest):
        events = live.stream(user.pk, after, render)
    else:
        # WSGI would buffer an endless body forever: send one round, and the
        # browser reconnects after the retry delay (long polling).
        events = [chunk async for chunk in live.stream(user.pk, after, render, once=True)]
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
