"""Which digest period is due, and what a digest says: pure functions, no database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from notify.scheduling.digests.periods import (
    DigestItem,
    digest_payload,
    group_items,
    latest_due,
    period_label,
    period_name,
    period_start,
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_period_is_today_once_the_hour_is_reached():
    # 08:00 in Berlin (CET, UTC+1) on 21 Nov 2026 is 07:00 UTC.
    before = latest_due(utc(2026, 11, 21, 6, 59), "daily", "Europe/Berlin", 8)
    assert (before.period, before.due_at) == ("2026-11-20", utc(2026, 11, 20, 7))
    at = latest_due(utc(2026, 11, 21, 7), "daily", "Europe/Berlin", 8)
    assert (at.period, at.due_at) == ("2026-11-21", utc(2026, 11, 21, 7))


def test_daily_period_is_the_local_date_not_the_utc_one():
    # 23:00 UTC on 20 Nov is 10:00 on 21 Nov in Sydney (AEDT, UTC+11).
    due = latest_due(utc(2026, 11, 20, 23), "daily", "Australia/Sydney", 8)
    assert due.period == "2026-11-21"
    assert due.due_at == utc(2026, 11, 20, 21)


def test_weekly_period_is_the_iso_week_of_the_chosen_weekday():
    # 2026-11-21 is a Saturday (week 47). Weekday 2 = Wednesday 18 Nov.
    due = latest_due(utc(2026, 11, 21, 12), "weekly", "UTC", 9, weekday=2)
    assert (due.period, due.day.isoformat(), due.due_at) == (
        "2026-W47",
        "2026-11-18",
        utc(2026, 11, 18, 9),
    )
    # On the Wednesday before 09:00: still the week before.
    early = latest_due(utc(2026, 11, 25, 8), "weekly", "UTC", 9, weekday=2)
    assert early.period == "2026-W47"
    assert latest_due(utc(2026, 11, 25, 9), "weekly", "UTC", 9, weekday=2).period == "2026-W48"


def test_spring_forward_a_skipped_digest_hour_is_due_at_the_change():
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
    due = latest_due(utc(2026, 3, 8, 7), "daily", "America/New_York", 2)
    assert (due.period, due.due_at) == ("2026-03-08", utc(2026, 3, 8, 7))
    assert latest_due(utc(2026, 3, 8, 6, 59), "daily", "America/New_York", 2).period == (
        "2026-03-07"
    )


def test_fall_back_a_repeated_digest_hour_names_one_period():
    # New York, 1 Nov 2026: 01:00-02:00 happens twice (05:00-06:00 and 06:00-07:00 UTC).
    first = latest_due(utc(2026, 11, 1, 5), "daily", "America/New_York", 1)
    second = latest_due(utc(2026, 11, 1, 6, 30), "daily", "America/New_York", 1)
    assert first == second
    assert first.due_at == utc(2026, 11, 1, 5)


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        ("America/New_York", utc(2026, 3, 5)),
        ("America/New_York", utc(2026, 10, 29)),
        ("Europe/Berlin", utc(2026, 3, 26)),
        ("Europe/Berlin", utc(2026, 10, 22)),
        ("Australia/Sydney", utc(2026, 4, 2)),
        ("Australia/Sydney", utc(2026, 10, 1)),
        ("Asia/Kolkata", utc(2026, 3, 26)),
    ],
)
@pytest.mark.parametrize("hour", [0, 1, 2, 3, 8, 23])
def test_every_local_date_is_due_once_across_dst(zone, start, hour):
    """Minute by minute through a week with a DST change: the due period only
    moves forward, one local date at a time, never skipping one."""
    seen = []
    now = start
    while now < start + timedelta(days=7):
        period = latest_due(now, "daily", zone, hour).period
        if not seen or seen[-1] != period:
            seen.append(period)
        now += timedelta(minutes=5)
    days = [datetime.fromisoformat(p).date() for p in seen]
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(days))
    assert len(seen) in (7, 8)


def test_period_names_and_labels():
    day = datetime(2026, 11, 21).date()
    assert period_name("daily", day) == "2026-11-21"
    assert period_name("weekly", day) == "2026-W47"
    assert period_name("weekly", datetime(2027, 1, 1).date()) == "2026-W53"
    assert period_start("weekly", "2026-W47").isoformat() == "2026-11-16"
    assert period_label("daily", "2026-11-21") == "Saturday 21 November 2026"
    assert period_label("weekly", "2026-W47") == "the week of Monday 16 November 2026"


def item(key: str, title: str, minutes: int) -> DigestItem:
    return DigestItem(
        key, key.title(), title, f"https://x.test/{title}", utc(2026, 1, 1, 0, minutes)
    )


def test_items_grouped_by_category_biggest_first_newest_first_capped():
    items = [item("orders", f"o{i}", i) for i in range(12)] + [
        item("comments", "c1", 1),
        item("comments", "c2", 2),
    ]
    groups = group_items(items, per_category=10)
    assert [(g["key"], g["count"], g["more"]) for g in groups] == [
        ("orders", 12, 2),
        ("comments", 2, 0),
    ]
    assert [i["title"] for i in groups[0]["entries"]][:3] == ["o11", "o10", "o9"]
    assert len(groups[0]["entries"]) == 10
    payload = digest_payload("daily", "2026-01-01", items)
    assert payload["count"] == 14
    assert payload["summary"] == "12 Orders, 2 Comments"
