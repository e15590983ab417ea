"""Live push for the inbox: server-sent events at ``/inbox/events``.

An open inbox page keeps one ``EventSource`` connection. The stream is an async
generator served by the ASGI server (uvicorn under ``notify run``), so an open
page holds a coroutine, not a thread:

1. ``retry: 2000`` tells the browser how soon to reconnect after a drop;
2. the feed starts after a cursor: the ``Last-Event-ID`` the browser sends when
   it reconnects, else the ``after`` the page was rendered with, else now;
3. every ``POLL_INTERVAL`` (0.5 s) — or at once, when this process's in-app
   channel just wrote an item for the user (``notifier``) — one indexed query
   (``inbox_idx``: user, inbox time) fetches the user's items that reached the
   inbox since the cursor, and one count (``inbox_unread_idx``) the badge;
4. each new item goes out as ``event: item`` with ``id: <cursor>``; a changed
   count as ``event: unread``; a ``: keep-alive`` comment every 15 s keeps
   proxies from closing an idle connection;
5. after ``MAX_STREAM`` seconds the server ends the stream and the browser
   reconnects with its ``Last-Event-ID``, so sign-outs and deploys take effect.

Items reach the inbox in the order their deliveries *commit*, which is not
quite the order of ``inbox_at`` when several workers write at once, so every
poll looks ``LOOKBACK`` seconds behind the cursor and skips the ids it sent.

Served by WSGI (Django's test server) an endless response would be buffered
forever, so there the view asks for ``once``: one round, then the stream ends
and the browser reconnects after the ``retry`` delay — long polling.

Scale-out. The in-process ``notifier`` only hears deliveries made by this
process; with Celery workers or several web processes the 0.5 s poll is what
finds the rest, at two indexed queries per open page per tick. Past a few
thousand open pages, replace the poll with a broadcast: PostgreSQL
``LISTEN inbox_<user>`` / ``NOTIFY`` from ``store_inapp_message`` (one
listening connection per web process, fanned out to its streams through
``notifier.publish``), or Redis pub/sub on a channel per user with the same
shape; keep a slow poll (say 30 s) as the safety net for lost messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from notify.inbox import store
from notify.models import Notification

POLL_INTERVAL = 0.5  # seconds between polls when nothing wakes the stream
HEARTBEAT = 15.0  # seconds between keep-alive comments
MAX_STREAM = 300.0  # seconds before the server ends a stream (the browser reconnects)
RETRY_MS = 2000  # the browser's reconnection delay
LOOKBACK = timedelta(seconds=5)  # how late a commit may be and still be pushed
BATCH = 50  # items pushed per poll at most; the rest follow on the next
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class Notifier:
    """In-process wake-ups: ``publish(user_id)`` from any thread sets the
    asyncio events of that user's open streams in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def subscribe(self, user_id: int) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._streams.setdefault(user_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                streams = self._streams.get(user_id, set())
                streams.discard(entry)
                if not streams:
                    self._streams.pop(user_id, None)

    def publish(self, user_id: int) -> None:
        with self._lock:
            streams = list(self._streams.get(user_id, ()))
        for loop, event in streams:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def listeners(self, user_id: int) -> int:
        with self._lock:
            return len(self._streams.get(user_id, ()))


notifier = Notifier()


@dataclass(frozen=True, order=True, slots=True)
class Cursor:
    """A position in one user's inbox: (inbox time, id), the SSE event id."""

    at: datetime
    pk: int = 0

    def encode(self) -> str:
        return f"{(self.at - EPOCH) // MICROSECOND}-{self.pk}"

    @classmethod
    def decode(cls, value: str | None) -> Cursor | None:
        """Parse an event id; None for anything malformed or absurd."""
        try:
            micros, pk = (value or "").strip().split("-")
            at = EPOCH + int(micros) * MICROSECOND
            pk_number = int(pk)
        except (ValueError, OverflowError, OSError):
            return None
        if pk_number < 0 or at > timezone.now() + timedelta(days=1):
            return None
        return cls(at, pk_number)

    @classmethod
    def of(cls, item: Notification) -> Cursor:
        return cls(item.inbox_at, item.pk)


def sse(data: Any, event: str | None = None, event_id: str | None = None) -> str:
    """One server-sent event; the JSON has no raw newlines, so one data line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, cls=DjangoJSONEncoder)}")
    return "\n".join(lines) + "\n\n"


# Turns new items into the payloads of ``item`` events (the page renders HTML).
Render = Callable[[list[Notification]], list[dict[str, Any]]]


class LiveFeed:
    """What one stream has sent: the cursor, recent ids, the last count. Its
    methods are synchronous (ORM) and run through ``sync_to_async``."""

    def __init__(self, user_id: int, after: Cursor | None):
        self.user_id = user_id
        self.after = after
        self.sent: dict[int, datetime] = {}  # id -> inbox time, within LOOKBACK
        self.unread: int | None = None

    def start(self) -> None:
        """Count what the page already shows (up to the cursor) as sent."""
        if self.after is None:
            self.after = Cursor(timezone.now())
        shown = store.inbox(self.user_id).filter(
            inbox_at__gte=self.after.at - LOOKBACK, inbox_at__lte=self.after.at
        )
        for pk, at in shown.values_list("pk", "inbox_at"):
            if Cursor(at, pk) <= self.after:
                self.sent[pk] = at

    def poll(self) -> tuple[list[Notification], int | None]:
        """New items, oldest first, and the unread count if it changed."""
        assert self.after is not None, "start() first"
        floor = self.after.at - LOOKBACK
        new = list(
            store.inbox(self.user_id)
            .filter(inbox_at__gte=floor)
            .exclude(pk__in=list(self.sent))
            .select_related("category")
            .order_by("inbox_at", "pk")[:BATCH]
        )
        for item in new:
            self.sent[item.pk] = item.inbox_at
            self.after = max(self.after, Cursor.of(item))
        floor = self.after.at - LOOKBACK
        self.sent = {pk: at for pk, at in self.sent.items() if at >= floor}
        unread = store.unread_count(self.user_id)
        changed = unread != self.unread
        self.unread = unread
        return new, unread if changed else None

    def tick(self, render: Render) -> list[str]:
        """One poll as SSE text."""
        new, unread = self.poll()
        chunks = []
        if new:
            assert self.after is not None
            payloads = render(new)
            for number, payload in enumerate(payloads, 1):
                # Only the last event moves the browser's Last-Event-ID: a drop
                # in the middle of a batch makes the reconnection send it again.
                event_id = self.after.encode() if number == len(payloads) else None
                chunks.append(sse(payload, "item", event_id))
        if unread is not None:
            chunks.append(sse({"unread_count": unread}, "unread"))
        return chunks


async def stream(
    user_id: int, after: Cursor | None, render: Render, *, once: bool = False
) -> AsyncIterator[str]:
    """The body of ``/inbox/events``; see the module docstring."""
    loop = asyncio.get_running_loop()
    feed = LiveFeed(user_id, after)
    with notifier.subscribe(user_id) as wakeup:
        yield f"retry: {RETRY_MS}\n\n"
        await sync_to_async(feed.start)()
        started = beat = loop.time()
        while True:
            wakeup.clear()
            for chunk in await sync_to_async(feed.tick)(render):
                yield chunk
            if once or loop.time() - started >= MAX_STREAM:
                return
            if loop.time() - beat >= HEARTBEAT:
                beat = loop.time()
                yield ": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), POLL_INTERVAL)
