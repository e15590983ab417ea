"""Throttling: at most N notifications per user per window, for a rule or a category.

Pure: counts in, decisions out. The counting (notifications written for the
user by the rule, or in the category, since ``window_start``, leaving out the
ones that were themselves throttled) is done at the database edge, one query
per fan-out chunk (``notify.fanout.policies``).

The window slides: a notification written at ``t`` counts while
``now - t < window``, so at ``t + window`` exactly it no longer does.

What goes over the limit is recorded either way, with skip reason
``throttled``:

* ``digest`` (fold): the channels with an address wait for the user's next
  digest (status ``digest``, collected like a daily digest item); the in-app
  item shows at once, as it does for a user in digest mode;
* ``drop``: every channel is skipped.

Only deliveries that were going out are changed: one the user's preferences
skip, or hold for a digest already, stays as decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

THROTTLED = "throttled"
DIGEST, DROP = "digest", "drop"
SCOPE_RULE, SCOPE_CATEGORY = "rule", "category"

# Delivery statuses (``notify.models.status.Status``; rules does not import channels).
PENDING, SKIPPED, HELD_FOR_DIGEST = "pending", "skipped", "digest"


@dataclass(frozen=True, slots=True)
class ThrottleSpec:
    limit: int
    window: timedelta
    scope: str = SCOPE_RULE
    action: str = DIGEST

    def describe(self) -> str:
        per = "rule" if self.scope == SCOPE_RULE else "category"
        then = "fold into the digest" if self.action == DIGEST else "drop"
        return f"at most {self.limit} per user per {self.window} ({per}), then {then}"


def make_throttle(
    limit: int | None, window: timedelta | None, scope: str, action: str
) -> ThrottleSpec | None:
    if not limit or not window or window <= timedelta(0):
        return None
    return ThrottleSpec(limit, window, scope or SCOPE_RULE, action or DIGEST)


def window_start(now: datetime, spec: ThrottleSpec) -> datetime:
    """Notifications written after this instant (excluded) count."""
    return now - spec.window


def over_limit(spec: ThrottleSpec, user_ids: Iterable[int], counts: Mapping[int, int]) -> set[int]:
    """The users who have had ``spec.limit`` notifications in the window already."""
    return {u for u in user_ids if counts.get(u, 0) >= spec.limit}


def throttle_deliveries(
    deliveries: Sequence[Any], action: str, address_kinds: Mapping[str, str | None]
) -> tuple[Any, ...]:
    """The deliveries of one over-limit notification (named tuples with
    ``channel``, ``status`` and ``skip_reason``), throttled."""
    out = []
    for d in deliveries:
        if d.status != PENDING:
            out.append(d)
        elif action == DIGEST and address_kinds.get(d.channel) is None:
            out.append(d)  # in-app: shows at once, like a digest-mode user's
        elif action == DIGEST:
            out.append(
                d._replace(
                    status=HELD_FOR_DIGEST, skip_reason=THROTTLED, hold_reason="", due_at=None
                )
            )
        else:
            out.append(
                d._replace(status=SKIPPED, skip_reason=THROTTLED, hold_reason="", due_at=None)
            )
    return tuple(out)
