"""Wall-clock time in a user's zone, made exact across DST changes.

Schedules are written in wall-clock time ("08:00 in Europe/Berlin") and stored
in UTC. Twice a year a wall-clock time is ambiguous (the hour repeated when
clocks go back) or does not exist (the hour skipped when they go forward);
``wall_instants`` says which UTC instants a wall-clock time stands for on a
given day, so callers never guess. Pure: no database, no "now".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The zone called ``name``; UTC for an empty or unknown name (the settings
    form validates names, so an unknown one is a row edited by hand)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def wall_clock(instant: datetime, tz: ZoneInfo) -> datetime:
    """``instant`` as a naive wall-clock reading in ``tz``."""
    return instant.astimezone(tz).replace(tzinfo=None)


def wall_instants(day: date, at: time, tz: ZoneInfo) -> list[datetime]:
    """The UTC instants at which the wall clock in ``tz`` reads ``day`` ``at``.

    * usually one;
    * two, earliest first, when clocks go back and the time is repeated;
    * when clocks go forward and the time does not exist, the first instant
      after it: the moment of the change, when the wall clock jumps past it.
    """
    naive = datetime.combine(day, at.replace(tzinfo=None))
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if wall_clock(first, tz) == naive:
        return [first] if first == second or wall_clock(second, tz) != naive else [first, second]
    # A gap: fold=1 reads the later offset (an instant before the change),
    # fold=0 the earlier one (an instant after it). The change lies between;
    # find it to the second (zones change offset on whole seconds).
    before, after = sorted((first, second))
    low, high = int(before.timestamp()), int(after.timestamp())
    after_offset = after.astimezone(tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return [datetime.fromtimestamp(high, UTC)]


def first_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The first instant at which the wall clock in ``tz`` has reached ``day`` ``at``."""
    return wall_instants(day, at, tz)[0]
