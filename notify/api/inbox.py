"""The logged-in user's in-app inbox over JSON (session auth, CSRF on POSTs).

Every query goes through ``notify.inbox.store``, which filters by the user first, so
an id that belongs to someone else is simply not found.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import ensure_csrf_cookie
from pydantic import ValidationError as PydanticValidationError

from notify.api.auth import login_required_json
from notify.api.errors import ApiError, api_view, from_pydantic
from notify.api.schemas import InboxQuery
from notify.inbox import store
from notify.models import Notification
from notify.outbox.engagement import mark_seen


def item_json(item: Notification) -> dict[str, Any]:
    return {
        "id": item.pk,
        "title": item.title,
        "body": item.body,
        "url": item.url,
        "category": item.category.key,
        "created_at": item.inbox_at,
        "read": item.read_at is not None,
        "read_at": item.read_at,
    }


def entry_json(entry: store.InboxEntry) -> dict[str, Any]:
    """An item; a collapsed group's head also carries ``group`` (its summary
    title, the unread member count and the first members, newest first)."""
    data = item_json(entry.item)
    if entry.collapsed:
        data["title"] = entry.title
        data["group"] = {
            "key": entry.item.group_key,
            "count": entry.count,
            "members": [
                {"id": m.pk, "title": m.title, "url": m.url, "created_at": m.inbox_at}
                for m in entry.members
            ],
        }
    return data


def page_url(request: HttpRequest, page: int) -> str:
    query = request.GET.copy()
    query["page"] = str(page)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


@ensure_csrf_cookie  # a script that reads the inbox can then send the POSTs
@api_view("GET")
@login_required_json
def inbox_list(request: HttpRequest) -> JsonResponse:
    """One page of the inbox, newest first, with the unread count for the badge.
    Unread items of one group come as one entry (see ``notify.inbox.store``)."""
    try:
        query = InboxQuery.model_validate(request.GET.dict())
    except PydanticValidationError as exc:
        raise from_pydantic(exc) from None
    user_id = request.user.pk
    items = store.entries(user_id).select_related("category")
    if query.unread:
        items = items.filter(read_at__isnull=True)
    count = items.count()
    start = (query.page - 1) * query.page_size
    page = list(items[start : start + query.page_size]) if start < count else []
    entries = store.collapse(user_id, page)
    mark_seen(item.pk for item in page)  # listed to the user's app: a workflow's "seen"
    return JsonResponse(
        {
            "unread_count": store.unread_count(user_id),
            "count": count,
            "page": query.page,
            "page_size": query.page_size,
            "next": page_url(request, query.page + 1) if start + query.page_size < count else None,
            "previous": page_url(request, query.page - 1) if query.page > 1 else None,
            "results": [entry_json(entry) for entry in entries],
        }
    )


def set_read(request: HttpRequest, item_id: int, read: bool) -> JsonResponse:
    user_id = request.user.pk
    item = store.inbox(user_id).select_related("category").filter(pk=item_id).first()
    if item is None:
        raise ApiError(404, "not_found", f"No item {item_id} in your inbox.")
    if (item.read_at is not None) != read:  # keep the first read_at on a repeat
        store.mark(user_id, [item.pk], read)
        item.refresh_from_db(fields=["read_at"])
    return JsonResponse({**item_json(item), "unread_count": store.unread_count(user_id)})


@api_view("POST")
@login_required_json
def mark_read(request: HttpRequest, item_id: int) -> JsonResponse:
    return set_read(request, item_id, read=True)


@api_view("POST")
@login_required_json
def mark_unread(request: HttpRequest, item_id: int) -> JsonResponse:
    return set_read(request, item_id, read=False)


@api_view("POST")
@login_required_json
def mark_all_read(request: HttpRequest) -> JsonResponse:
    user_id = request.user.pk
    updated = store.mark_all_read(user_id)
    return JsonResponse({"updated": updated, "unread_count": store.unread_count(user_id)})
