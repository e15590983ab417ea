"""Active windows: when a rule's deliveries may go out (e.g. business hours).

Pure: a window and a time in, the time it opens out. A rule with an active
window still matches outside it; its deliveries are held (``hold_reason``
``outside_active_window``) until the window next opens, so nothing is lost
and nothing goes out at night. Holding rather than not matching was chosen
because "the on-call team hears about it at 09:00" is what ops ask for;
a rule that should ignore events outside the window can say so in its
condition (``event.received_at``).

A window is a set of weekdays (empty: every day) and wall-clock times in an
IANA zone, ``from`` included and ``until`` excluded. ``until`` at or before
``from`` spans midnight (22:00-06:00 belongs to the day it starts on);
no times at all means the whole day. Wall-clock times are converted with
``zoneinfo``, so the window follows DST: 09:00 is 09:00 local on both sides
of a change; a time that does not exist that day (the spring-forward gap)
moves forward by the gap (02:30 becomes 03:30).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OUTSIDE_ACTIVE_WINDOW = "outside_active_window"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class WindowError(ValueError):
    """A window that cannot be used; the message says which part."""


@dataclass(frozen=True, slots=True)
class ActiveWindow:
    days: frozenset[int] = frozenset()  # 0 = Monday; empty: every day
    start: time | None = None  # None: midnight
    end: time | None = None  # None: midnight (the end of the day)
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if any(not isinstance(d, int) or not 0 <= d <= 6 for d in self.days):
            raise WindowError("days are numbers from 0 (Monday) to 6 (Sunday)")
        try:
            ZoneInfo(self.timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(f"'{self.timezone}' is not a known time zone") from None

    def describe(self) -> str:
        days = (
            "every day"
            if not self.days or len(self.days) == 7
            else ", ".join(DAY_NAMES[d] for d in sorted(self.days))
        )
        start = (self.start or time(0)).strftime("%H:%M")
        end = self.end.strftime("%H:%M") if self.end else "24:00"
        return f"{days} {start}-{end} {self.timezone or 'UTC'}"


def make_window(
    days: list[int] | None, start: time | None, end: time | None, timezone: str
) -> ActiveWindow | None:
    """The rule's window, or ``None`` when it has none (always active)."""
    if not days and start is None and end is None:
        return None
    return ActiveWindow(frozenset(days or ()), start, end, timezone or "UTC")


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Wall-clock ``at`` on ``day`` in ``zone``, as an aware UTC time (PEP 495,
    fold 0: a repeated time is its first occurrence; a time in the gap is read
    with the offset from before the change, so 02:30 becomes 03:30)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def intervals(window: ActiveWindow, around: datetime) -> list[tuple[datetime, datetime]]:
    """The window's open intervals from the day before ``around`` to a week after."""
    zone = ZoneInfo(window.timezone or "UTC")
    today = around.astimezone(zone).date()
    start = window.start or time(0)
    out = []
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        if window.days and day.weekday() not in window.days:
            continue
        opens = _local(day, start, zone)
        if window.end is None or window.end <= start:
            closes = _local(day + timedelta(days=1), window.end or time(0), zone)
        else:
            closes = _local(day, window.end, zone)
        out.append((opens, closes))
    return out


def is_open(window: ActiveWindow, at: datetime) -> bool:
    return any(opens <= at < closes for opens, closes in intervals(window, at))


def next_open(window: ActiveWindow | None, at: datetime) -> datetime | None:
    """``None`` if the window is open at ``at`` (or there is none); otherwise
    when it next opens."""
    if window is None:
        return None
    spans = intervals(window, at)
    if any(opens <= at < closes for opens, closes in spans):
        return None
    later = [opens for opens, _ in spans if opens > at]
    if not later:  # only with no days at all, which make_window never builds
        raise WindowError("the window never opens")
    return min(later)
