"""The in-app inbox: the in-app channel writes here, the inbox API reads here."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet
from django.utils import timezone

from channels.base import OutgoingMessage

from .models import Notification


def store_inapp_message(message: OutgoingMessage) -> None:
    """Write the rendered item into the user's inbox (the in-app "send")."""
    Notification.objects.filter(pk=message.extra["notification_id"]).update(
        title=message.subject[:500],
        body=message.text,
        url=(message.extra.get("url") or "")[:1000],
        inbox_at=timezone.now(),
    )


def inbox(user_id: int) -> QuerySet[Notification]:
    return Notification.objects.filter(user_id=user_id, inbox_at__isnull=False).order_by(
        "-inbox_at", "-pk"
    )


def unread_count(user_id: int) -> int:
    return Notification.objects.filter(
        user_id=user_id, inbox_at__isnull=False, read_at__isnull=True
    ).count()


def mark(user_id: int, ids: Iterable[int], read: bool) -> int:
    """Mark the user's own items read or unread; other users' ids are ignored."""
    items = inbox(user_id).filter(pk__in=list(ids))
    if read:  # keep the first read time of items already read
        return items.filter(read_at__isnull=True).update(read_at=timezone.now())
    return items.update(read_at=None)


def mark_all_read(user_id: int) -> int:
    return inbox(user_id).filter(read_at__isnull=True).update(read_at=timezone.now())
