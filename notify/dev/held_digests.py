"""What is held for a digest: the items waiting, grouped as the scheduler will
send them (user, channel, daily or weekly), and when their digest goes out.

Read for ``/dev/outbox/``: the sandbox shows what was sent, and this what will
be. The time is the one ``notify.scheduling.digests.build`` uses: the first
digest hour, in the user's zone, after the oldest item began waiting.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from notify.models import Delivery
from notify.models.status import Status
from notify.preferences.localtime import zone
from notify.scheduling.digests.build import frequency_of
from notify.scheduling.digests.periods import next_due, period_label

MAX_ITEMS = 500  # the page lists the newest waiting items, at most this many


@dataclass(slots=True)
class HeldItem:
    category: str
    title: str
    event_type: str
    since: datetime


@dataclass(slots=True)
class HeldDigest:
    username: str
    channel: str
    frequency: str
    due_at: datetime  # UTC
    local_due: str  # when, on the user's clock: "Sat 21 Nov 2026 08:00 Europe/Paris"
    period: str  # "Saturday 21 November 2026" or "the week of …"
    overdue: bool  # due already: the scheduler's next tick sends it
    items: list[HeldItem] = field(default_factory=list)


def held_digests(now: datetime, limit: int = MAX_ITEMS) -> list[HeldDigest]:
    """The digests that will go out, soonest first, with their items."""
    settings = "notification__user__notify_settings__"
    rows = (
        Delivery.objects.filter(status=Status.DIGEST, digest__isnull=True)
        .order_by("-updated_at")
        .values_list(
            "notification__user_id",
            "notification__user__username",
            "channel",
            "skip_reason",
            "updated_at",
            "notification__title",
            "notification__category__name",
            "notification__event__type",
            f"{settings}timezone",
            f"{settings}digest_hour",
            f"{settings}digest_weekday",
        )[:limit]
    )
    groups: dict[tuple[int, str, str], list[tuple]] = defaultdict(list)
    for row in rows:
        groups[(row[0], row[2], frequency_of(row[3]))].append(row)
    held = []
    for (_, channel, frequency), items in groups.items():
        first = items[-1]  # the oldest: newest first above
        tz = first[8] or "UTC"
        hour = 8 if first[9] is None else first[9]
        period = next_due(first[4], frequency, tz, hour, first[10] or 0)
        held.append(
            HeldDigest(
                username=first[1],
                channel=channel,
                frequency=frequency,
                due_at=period.due_at,
                local_due=f"{period.due_at.astimezone(zone(tz)):%a %d %b %Y %H:%M} {tz}",
                period=period_label(frequency, period.period),
                overdue=period.due_at <= now,
                items=[HeldItem(r[6], r[5], r[7], r[4]) for r in items],
            )
        )
    return sorted(held, key=lambda d: (d.due_at, d.username, d.channel))
