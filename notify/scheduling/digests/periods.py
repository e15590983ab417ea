"""Digests, the pure part: which period is due for a user, and what goes in it.

A daily digest is due at the user's digest hour in the user's time zone; a
weekly one at that hour on the user's digest weekday. A digest is named by its
period, the user's local date (``2026-11-21``) or ISO week (``2026-W47``), and
a ``Digest`` row is unique per (user, channel, frequency, period): that row is
what makes a digest go out once, whatever the number of ticks or schedulers.

``latest_due`` answers "which period is the most recent one whose digest hour
has been reached, and when was that": a scheduler that was down for a while
catches up with the latest period only (every waiting item goes into it), and
across DST changes the answer never skips a local date nor names one twice:

* a digest hour that does not exist that day (clocks go forward) is reached at
  the first instant after it;
* a repeated hour (clocks go back) is reached at its first occurrence, and the
  second occurrence names the same period, which already has its row.

The database side (building rows, claiming items, sending) is in
``notify.scheduling.digests.send``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from notify.preferences.decide import DAILY, WEEKLY
from notify.preferences.localtime import first_instant, wall_clock, zone

FREQUENCIES = (DAILY, WEEKLY)
# Items listed per category in one digest; the count always covers them all.
ITEMS_PER_CATEGORY = 10


@dataclass(frozen=True, slots=True)
class DuePeriod:
    frequency: str
    period: str  # "2026-11-21" or "2026-W47"
    day: date  # the local date the digest is due on
    due_at: datetime  # the UTC instant its digest hour was reached


def period_name(frequency: str, day: date) -> str:
    if frequency == WEEKLY:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return day.isoformat()


def period_start(frequency: str, period: str) -> date:
    """The first day of a period: its date, or the Monday of its ISO week."""
    if frequency == WEEKLY:
        year, _, week = period.partition("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    return date.fromisoformat(period)


def period_label(frequency: str, period: str) -> str:
    """``Saturday 21 November 2026``, or ``the week of Monday 16 November 2026``."""
    day = period_start(frequency, period)
    text = f"{day:%A} {day.day} {day:%B %Y}"
    return f"the week of {text}" if frequency == WEEKLY else text


def clamp_hour(hour: Any) -> int:
    try:
        return min(max(int(hour), 0), 23)
    except (TypeError, ValueError):
        return 8


def latest_due(
    now: datetime, frequency: str, tz_name: str, hour: int, weekday: int = 0
) -> DuePeriod:
    """The most recent period whose digest hour has been reached at ``now``."""
    tz = zone(tz_name)
    at = time(clamp_hour(hour))
    today = wall_clock(now, tz).date()
    if frequency == WEEKLY:
        step = timedelta(days=7)
        day = today - timedelta(days=(today.weekday() - int(weekday) % 7) % 7)
    else:
        frequency, step, day = DAILY, timedelta(days=1), today
    due_at = first_instant(day, at, tz)
    if due_at > now:  # not reached yet today (this week): the period before
        day -= step
        due_at = first_instant(day, at, tz)
    return DuePeriod(frequency, period_name(frequency, day), day, due_at)


def next_due(
    after: datetime, frequency: str, tz_name: str, hour: int, weekday: int = 0
) -> DuePeriod:
    """The first period whose digest hour comes after ``after``: the digest an
    item waiting since then goes out in (``build_due_digests`` claims it then)."""
    latest = latest_due(after, frequency, tz_name, hour, weekday)
    day = latest.day + (timedelta(days=7) if latest.frequency == WEEKLY else timedelta(days=1))
    due_at = first_instant(day, time(clamp_hour(hour)), zone(tz_name))
    return DuePeriod(latest.frequency, period_name(latest.frequency, day), day, due_at)


# -- what a digest says --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One held notification, rendered to a line."""

    category_key: str
    category_name: str
    title: str
    url: str
    created_at: datetime


def group_items(
    items: Iterable[DigestItem], per_category: int = ITEMS_PER_CATEGORY
) -> list[dict[str, Any]]:
    """Items grouped by category for the digest template: the biggest group
    first, newest items first, at most ``per_category`` listed per group."""
    groups: dict[str, list[DigestItem]] = {}
    names: dict[str, str] = {}
    for item in items:
        groups.setdefault(item.category_key, []).append(item)
        names.setdefault(item.category_key, item.category_name)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), names[kv[0]].lower()))
    result = []
    for key, members in ordered:
        members.sort(key=lambda i: i.created_at, reverse=True)
        shown = members[:per_category]
        result.append(
            {
                "key": key,
                "name": names[key],
                "count": len(members),
                "entries": [
                    {"title": i.title, "url": i.url, "at": i.created_at.isoformat()} for i in shown
                ],
                "more": len(members) - len(shown),
            }
        )
    return result


def digest_payload(frequency: str, period: str, items: list[DigestItem]) -> dict[str, Any]:
    """What the digest template sees as ``payload``."""
    groups = group_items(items)
    return {
        "frequency": frequency,
        "period": period,
        "date_label": period_label(frequency, period),
        "count": len(items),
        "groups": groups,
        "summary": ", ".join(f"{g['count']} {g['name']}" for g in groups),
    }
