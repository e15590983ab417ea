"""Quiet hours: when a user does not want to be disturbed, and until when.

A user's quiet hours are a wall-clock window in their own time zone
(``UserSettings.quiet_start`` to ``quiet_end``), possibly spanning midnight
(22:00 to 07:00). Non-critical messages on channels that reach a person
(email, SMS, chat) that would go out inside the window wait until it ends;
the in-app item appears at once, and machine endpoints (signed webhooks) are
never held. Pure functions: fan-out asks at planning time, dispatch asks again
just before sending (preferences may have changed).

The window is read off the wall clock: on the night clocks go back, a window
ending at 01:30 ends at the 01:30 that comes next (the second one if the
first has passed), and an end that does not exist that night (clocks go
forward) is the moment of the change.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from notify.preferences.localtime import wall_clock, wall_instants, zone

# Why a delivery waits, as recorded in ``Delivery.hold_reason``.
QUIET_HOURS = "quiet_hours"

# Address kinds that are machines, not people: quiet hours do not apply.
MACHINE_ADDRESS_KINDS = frozenset({"webhook"})


def applies_to(address_kind: str | None, critical: bool = False) -> bool:
    """Whether quiet hours can hold a message on a channel with this address kind.

    In-app (no address) shows at once; critical categories are never held."""
    return not critical and address_kind is not None and address_kind not in MACHINE_ADDRESS_KINDS


def in_window(wall: time, start: time, end: time) -> bool:
    """``start <= wall < end`` on a clock face; a window may span midnight.
    ``start == end`` is an empty window (no quiet hours)."""
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def quiet_until(
    now: datetime, start: time | None, end: time | None, tz_name: str
) -> datetime | None:
    """If ``now`` falls in the quiet hours, the UTC instant they end; else ``None``."""
    if start is None or end is None or start == end:
        return None
    tz = zone(tz_name)
    local = wall_clock(now, tz)
    if not in_window(local.time(), start, end):
        return None
    for day in (local.date(), local.date() + timedelta(days=1)):
        for instant in wall_instants(day, end, tz):
            if instant > now:
                return instant
    return None  # unreachable for a real zone: the end comes within a day
