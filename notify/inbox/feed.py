"""The bell's feed: one user's in-app items, newest first, paged by cursor.

Unlike the inbox page, the feed lists items one by one (no collapsing), so a
page boundary is a plain position in one order: (inbox time, id), both
descending. The cursor a page hands out names the last item it listed, and the
next page starts strictly after it (keyset pagination). Items that arrive
while someone scrolls are newer than every cursor, so they never shift a page:
scrolling down shows each item that was there exactly once, and the new ones
come over the live stream (``notify.inbox.live``) on top.

The cursor is opaque to clients (base64url of ``<microseconds>.<id>``, with a
version letter); anything else is a ``BadCursor``.

Archiving takes an item out of the default feed and marks it read: archived
means "done", so the badge never counts what the user put away.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from notify.inbox import store
from notify.models import Notification

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
CURSOR_VERSION = "a"

Archived = Literal["exclude", "only", "include"]


class BadCursor(ValueError):
    """A cursor this service did not hand out."""


@dataclass(frozen=True, slots=True)
class FeedCursor:
    at: datetime
    pk: int

    def encode(self) -> str:
        raw = f"{CURSOR_VERSION}{(self.at - EPOCH) // MICROSECOND}.{self.pk}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> FeedCursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
            if not raw.startswith(CURSOR_VERSION):
                raise BadCursor("not a cursor of this feed")
            micros, pk = raw[len(CURSOR_VERSION) :].split(".")
            cursor = cls(EPOCH + int(micros) * MICROSECOND, int(pk))
        except (ValueError, UnicodeError, binascii.Error, OverflowError) as exc:
            if isinstance(exc, BadCursor):
                raise
            raise BadCursor("not a cursor of this feed") from None
        if cursor.pk < 1:
            raise BadCursor("not a cursor of this feed")
        return cursor

    @classmethod
    def of(cls, item: Notification) -> FeedCursor:
        return cls(item.inbox_at, item.pk)


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """What the feed shows: only unread, archived or not, one category."""

    unread: bool = False
    archived: Archived = "exclude"
    category: str | None = None


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[Notification]
    next_cursor: str | None  # None on the last page


def filtered(user_id: int, wanted: FeedFilter) -> QuerySet[Notification]:
    """The user's items that ``wanted`` lets through, newest first."""
    items = store.inbox(user_id)
    if wanted.unread:
        items = items.filter(read_at__isnull=True)
    if wanted.archived == "exclude":
        items = items.filter(archived_at__isnull=True)
    elif wanted.archived == "only":
        items = items.filter(archived_at__isnull=False)
    if wanted.category:
        items = items.filter(category__key=wanted.category)
    return items


def page(user_id: int, wanted: FeedFilter, after: FeedCursor | None, limit: int) -> FeedPage:
    """Up to ``limit`` items strictly after ``after`` (from the top without one)."""
    items = filtered(user_id, wanted).select_related("category")
    if after is not None:
        items = items.filter(Q(inbox_at__lt=after.at) | Q(inbox_at=after.at, pk__lt=after.pk))
    rows = list(items[: limit + 1])
    shown = rows[:limit]
    more = len(rows) > limit
    return FeedPage(shown, FeedCursor.of(shown[-1]).encode() if more and shown else None)


def counts(user_id: int, wanted: FeedFilter) -> dict[str, int]:
    """``unread``: the badge (all unread items, archived ones are read);
    ``total``: the items ``wanted`` lets through, over all pages."""
    return {"unread": store.unread_count(user_id), "total": filtered(user_id, wanted).count()}


def own_item(user_id: int, item_id: int) -> Notification | None:
    return store.inbox(user_id).select_related("category").filter(pk=item_id).first()


def set_read(user_id: int, ids: Iterable[int], read: bool) -> int:
    """Mark the user's own items, one by one (the feed does not collapse)."""
    items = store.inbox(user_id).filter(pk__in=list(ids))
    if read:  # keep the first read time of items already read
        return items.filter(read_at__isnull=True).update(read_at=timezone.now())
    return items.filter(read_at__isnull=False, archived_at__isnull=True).update(read_at=None)


def mark_all_read(user_id: int, category: str | None = None) -> int:
    items = store.inbox(user_id).filter(read_at__isnull=True)
    if category:
        items = items.filter(category__key=category)
    return items.update(read_at=timezone.now())


def set_archived(user_id: int, ids: Iterable[int], archived: bool) -> int:
    """Archive (and mark read) or bring back the user's own items."""
    items = store.inbox(user_id).filter(pk__in=list(ids))
    if not archived:
        return items.filter(archived_at__isnull=False).update(archived_at=None)
    now = timezone.now()
    # Keeps the first read time of items already read.
    return items.filter(archived_at__isnull=True).update(
        archived_at=now, read_at=Coalesce("read_at", Value(now))
    )
