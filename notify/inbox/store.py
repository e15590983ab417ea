"""The in-app inbox: the in-app channel writes here; the inbox page, its live
feed and the inbox API read here. Every query starts from the user's id, so an
id that belongs to someone else is simply not found.

Collapsing. Fan-out gives a notification a ``group_key`` when it is one of
several of the same kind about the same thing (see
``notify.fanout.pipeline.notification_group_key``). The unread items of one group
show as one inbox entry, headed by the newest ("Alice and 24 others commented
on …"), with the members listed on demand. Marking the entry read marks every
member it stands for in one statement, so they share one ``read_at`` and stay
one entry once read: a collapse set is (group key, read time), with all
unread items of a group in one set. Items read one by one stand alone. The
badge counts unread items, not entries.

Cost: ``entries`` numbers the user's inbox by collapse set (one window
function over the rows of ``inbox_idx`` for that user, sorted in memory):
milliseconds for the thousands of items a 90-day retention leaves. A service
whose users keep far more would add an index on (user, group_key, read_at).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Case, Count, F, Q, QuerySet, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from channels.base import OutgoingMessage
from notify.inbox.actions import split_actions
from notify.models import Notification

# Members of a collapsed entry loaded for the "show all" list; the count is exact.
MEMBERS_SHOWN = 20


# Items per UPDATE: four parameters each, far below SQLite's variable limit.
STORE_BATCH = 500


def store_inapp_message(message: OutgoingMessage) -> None:
    """Write the rendered item into the user's inbox (the in-app "send");
    trailing ``action:`` lines of the body become its buttons (``notify.inbox.actions``)."""
    store_inapp_messages([message])


def store_inapp_messages(messages: Sequence[OutgoingMessage]) -> int:
    """Write rendered items into their users' inboxes: one ``UPDATE ... FROM``
    statement per ``STORE_BATCH`` items (a row each already exists: fan-out
    wrote the notification), then wake each user's live feed once, after the
    commit. Returns how many items were written."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    table = connection.ops.quote_name(Notification._meta.db_table)
    postgres = connection.vendor == "postgresql"
    written = 0
    for start in range(0, len(messages), STORE_BATCH):
        batch = messages[start : start + STORE_BATCH]
        params: list[object] = []
        for message in batch:
            body, actions = split_actions(message.text)
            params += (
                int(message.extra["notification_id"]),
                message.subject[:500],
                body,
                (message.extra.get("url") or "")[:1000],
                json.dumps(actions),
            )
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch))
        actions_value = "CAST(item.actions AS jsonb)" if postgres else "item.actions"
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH item(id, title, body, url, actions) AS (VALUES {values}) "
                f"UPDATE {table} SET title = item.title, body = item.body, url = item.url, "
                f"actions = {actions_value}, inbox_at = %s FROM item WHERE {table}.id = item.id",
                [*params, now],
            )
            if connection.vendor == "sqlite":
                # Python's sqlite3 counts rows only for statements that start
                # with INSERT/UPDATE/DELETE, not WITH.
                cursor.execute("SELECT changes()")
                written += cursor.fetchone()[0]
            else:
                written += max(cursor.rowcount, 0)
    users = {m.extra.get("user_id") for m in messages} - {None}
    if users:
        from notify.inbox.live import notifier  # here: notify.inbox.live imports this module

        transaction.on_commit(lambda: [notifier.publish(user_id) for user_id in users])
    return written


def inbox(user_id: int) -> QuerySet[Notification]:
    return Notification.objects.filter(user_id=user_id, inbox_at__isnull=False).order_by(
        "-inbox_at", "-pk"
    )


def unread_count(user_id: int) -> int:
    return Notification.objects.filter(
        user_id=user_id, inbox_at__isnull=False, read_at__isnull=True
    ).count()


def entries(user_id: int) -> QuerySet[Notification]:
    """The inbox with each collapse set reduced to its newest item (the head),
    newest first; page it, then ``collapse`` the page. Archived items are left out."""
    return (
        inbox(user_id)
        .filter(archived_at__isnull=True)
        .annotate(
            place=Window(
                RowNumber(),
                # An item without a group key is a set of its own (its id).
                partition_by=[
                    F("group_key"),
                    F("read_at"),
                    Case(When(group_key="", then=F("pk")), default=Value(0)),
                ],
                order_by=[F("inbox_at").desc(), F("pk").desc()],
            )
        )
        .filter(place=1)
    )


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One line of the inbox: an item, or the unread items of a group collapsed."""

    item: Notification  # the head: its id, time, link and read state stand for the entry
    title: str  # the item's title, or "Alice and 24 others commented on …"
    count: int = 1  # unread members, head included (1: not collapsed)
    members: tuple[Notification, ...] = field(default=())  # newest first, <= MEMBERS_SHOWN

    @property
    def collapsed(self) -> bool:
        return self.count > 1

    @property
    def members_not_shown(self) -> int:
        return max(0, self.count - len(self.members))


def actor_name(user) -> str:
    """How templates name an actor (``actor.name`` in the render context)."""
    return user.get_full_name() or user.get_username()


def collapsed_title(head: Notification, count: int, people: int) -> str:
    """ "Alice and 24 others commented on …" when the head's title starts with its
    actor's name and more than one person acted; else the title and a count."""
    if count <= 1:
        return head.title
    actor = head.event.actor if head.event_id else None
    name = actor_name(actor) if actor is not None else ""
    if name and people > 1 and head.title.startswith(name):
        others = people - 1
        return f"{name} and {others} other{'' if others == 1 else 's'}{head.title[len(name) :]}"
    return f"{head.title} (+{count - 1} more)"


def same_set(group_key: str, read_at) -> Q:
    """The items of one collapse set (``group_key`` not empty)."""
    if read_at is None:
        return Q(group_key=group_key, read_at__isnull=True)
    return Q(group_key=group_key, read_at=read_at)


def collapse(user_id: int, heads: Sequence[Notification]) -> list[InboxEntry]:
    """Entries for one page of ``entries``: two more queries when the page holds
    grouped items (counts per set, then the first members of each), none
    otherwise, whatever the page size."""
    sets = {(h.group_key, h.read_at) for h in heads if h.group_key}
    if not sets:
        return [InboxEntry(h, h.title) for h in heads]
    wanted = Q()
    for group_key, read_at in sets:
        wanted |= same_set(group_key, read_at)
    members_of = inbox(user_id).filter(wanted)
    counts = {
        (row["group_key"], row["read_at"]): (row["items"], row["people"])
        for row in members_of.order_by()
        .values("group_key", "read_at")
        .annotate(items=Count("pk"), people=Count("event__actor", distinct=True))
    }
    ranked = (
        members_of.select_related("event__actor", "category")
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("group_key"), F("read_at")],
                order_by=[F("inbox_at").desc(), F("pk").desc()],
            )
        )
        .filter(rank__lte=MEMBERS_SHOWN)
    )
    members: dict[tuple, list[Notification]] = defaultdict(list)
    for member in ranked:
        members[member.group_key, member.read_at].append(member)
    out = []
    for head in heads:
        key = (head.group_key, head.read_at)
        count, people = counts.get(key, (1, 0))
        if head.group_key and count > 1 and members[key]:
            shown = members[key]
            # The member row has the actor loaded; a member newer than the head
            # can exist (it arrived after the page was listed).
            described = next((m for m in shown if m.pk == head.pk), shown[0])
            title = collapsed_title(described, count, people)
            out.append(InboxEntry(head, title, count, tuple(shown)))
        else:
            out.append(InboxEntry(head, head.title))
    return out


def with_collapsed_members(user_id: int, ids: Iterable[int]) -> QuerySet[Notification]:
    """The user's items ``ids`` plus, for each grouped one, the older items of
    its collapse set, which its entry stands for (newer ones arrived after the
    user saw the entry, so they are left as they are)."""
    rows = list(
        inbox(user_id)
        .filter(pk__in=list(ids))
        .values_list("pk", "group_key", "inbox_at", "read_at")
    )
    wanted = Q(pk__in=[pk for pk, _, _, _ in rows])
    for pk, group_key, inbox_at, read_at in rows:
        if group_key:
            wanted |= same_set(group_key, read_at) & (
                Q(inbox_at__lt=inbox_at) | Q(inbox_at=inbox_at, pk__lt=pk)
            )
    return inbox(user_id).filter(wanted)


def mark(user_id: int, ids: Iterable[int], read: bool) -> int:
    """Mark the user's own items read or unread; other users' ids are ignored.
    A collapsed entry's head carries the members it stands for along."""
    items = with_collapsed_members(user_id, ids)
    if read:  # keep the first read time of items already read
        return items.filter(read_at__isnull=True).update(read_at=timezone.now())
    return items.filter(read_at__isnull=False).update(read_at=None)


def mark_all_read(user_id: int) -> int:
    return inbox(user_id).filter(read_at__isnull=True).update(read_at=timezone.now())
