"""Quiet hours and wall-clock instants: pure functions, no database, DST included."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from notify.preferences.localtime import first_instant, wall_instants, zone
from notify.preferences.quiet_hours import applies_to, in_window, quiet_until

NY = zone("America/New_York")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- wall_instants -----------------------------------------------------------------------


def test_an_ordinary_wall_time_is_one_instant():
    assert wall_instants(date(2026, 6, 1), time(8), zone("Europe/Berlin")) == [utc(2026, 6, 1, 6)]
    # Half-hour offset: 08:00 in Kolkata is 02:30 UTC.
    assert wall_instants(date(2026, 6, 1), time(8), zone("Asia/Kolkata")) == [
        utc(2026, 6, 1, 2, 30)
    ]


def test_a_repeated_wall_time_is_two_instants_earliest_first():
    # New York falls back on 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    assert wall_instants(date(2026, 11, 1), time(1, 30), NY) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
    ]


@pytest.mark.parametrize("at", [time(2), time(2, 30), time(2, 59, 59)])
def test_a_skipped_wall_time_is_the_moment_of_the_change(at):
    # New York springs forward on 2026-03-08 at 02:00 EST = 07:00 UTC (to 03:00 EDT).
    assert wall_instants(date(2026, 3, 8), at, NY) == [utc(2026, 3, 8, 7)]


def test_southern_hemisphere_changes_the_other_way():
    sydney = zone("Australia/Sydney")
    # Sydney falls back on 2026-04-05 (03:00 AEDT -> 02:00 AEST): 02:30 happens twice.
    assert len(wall_instants(date(2026, 4, 5), time(2, 30), sydney)) == 2
    # and springs forward on 2026-10-04 (02:00 AEST -> 03:00 AEDT): 02:30 never happens.
    assert wall_instants(date(2026, 10, 4), time(2, 30), sydney) == [utc(2026, 10, 3, 16)]
    assert first_instant(date(2026, 10, 4), time(3), sydney) == utc(2026, 10, 3, 16)


def test_unknown_zone_is_utc():
    assert zone("Mars/Olympus_Mons") == zone("UTC")
    assert zone("") == zone("UTC")


# -- quiet hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "start", "end", "inside"),
    [
        (time(23), time(22), time(7), True),
        (time(3), time(22), time(7), True),
        (time(7), time(22), time(7), False),  # the end is not inside
        (time(21, 59), time(22), time(7), False),
        (time(13), time(12), time(14), True),
        (time(14), time(12), time(14), False),
        (time(12), time(12), time(12), False),  # empty window
    ],
)
def test_in_window(wall, start, end, inside):
    assert in_window(wall, start, end) is inside


def test_outside_quiet_hours_nothing_waits():
    now = utc(2026, 6, 1, 12)  # 14:00 in Berlin
    assert quiet_until(now, time(22), time(7), "Europe/Berlin") is None
    assert quiet_until(now, None, time(7), "Europe/Berlin") is None
    assert quiet_until(now, time(22), time(22), "Europe/Berlin") is None


def test_quiet_hours_spanning_midnight_end_the_next_morning():
    # 23:30 in Berlin (CEST, UTC+2) on 1 June: quiet until 07:00 on 2 June = 05:00 UTC.
    assert quiet_until(utc(2026, 6, 1, 21, 30), time(22), time(7), "Europe/Berlin") == utc(
        2026, 6, 2, 5
    )
    # 03:00 in Berlin: quiet until 07:00 the same day.
    assert quiet_until(utc(2026, 6, 2, 1), time(22), time(7), "Europe/Berlin") == utc(2026, 6, 2, 5)


def test_quiet_hours_in_the_users_zone_not_the_servers():
    # 22:30 UTC is 04:00 in Kolkata (UTC+5:30): inside 22:00-07:00 there, ends 01:30 UTC.
    assert quiet_until(utc(2026, 6, 1, 22, 30), time(22), time(7), "Asia/Kolkata") == utc(
        2026, 6, 2, 1, 30
    )
    assert quiet_until(utc(2026, 6, 1, 22, 30), time(22), time(7), "UTC") == utc(2026, 6, 2, 7)


def test_quiet_hours_across_spring_forward_end_at_the_local_end():
    # New York, night of 7-8 March 2026: 23:00 EST is 04:00 UTC; 07:00 EDT is 11:00 UTC.
    assert quiet_until(utc(2026, 3, 8, 4), time(22), time(7), "America/New_York") == utc(
        2026, 3, 8, 11
    )


def test_quiet_hours_ending_in_a_repeated_hour_end_at_the_next_end():
    # New York falls back on 2026-11-01; quiet 22:00-01:30 ends at the first 01:30 (05:30 UTC)
    quiet = (time(22), time(1, 30), "America/New_York")
    assert quiet_until(utc(2026, 11, 1, 4), *quiet) == utc(2026, 11, 1, 5, 30)
    # ... and at 01:10 the second time round (06:10 UTC), the clock reads inside the
    # window again: it ends at the second 01:30.
    assert quiet_until(utc(2026, 11, 1, 6, 10), *quiet) == utc(2026, 11, 1, 6, 30)


def test_quiet_hours_ending_in_a_skipped_hour_end_at_the_change():
    quiet = (time(22), time(2, 30), "America/New_York")  # 02:30 does not exist on 8 March
    assert quiet_until(utc(2026, 3, 8, 5), *quiet) == utc(2026, 3, 8, 7)


def test_who_quiet_hours_apply_to():
    assert applies_to("email")
    assert applies_to("phone")
    assert applies_to("slack")
    assert not applies_to(None)  # in-app shows at once
    assert not applies_to("webhook")  # machines do not sleep
    assert not applies_to("email", critical=True)
