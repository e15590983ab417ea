"""Channel fallback: send on one channel only when another could not be used.

A rule's ``fallback`` maps a channel to the one it stands in for:
``{"sms": "email"}`` sends the SMS only when the email is skipped because the
user has no address, an unverified one, or a suppressed one. Decided at
fan-out, from the same preference decisions; pure.

A bounce reported later (after the email was accepted) does not send the SMS:
the fallback is decided once, at fan-out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The skip reasons (``notify.preferences.decide``) that mean "this channel cannot reach them".
UNREACHABLE = frozenset({"no_address", "unverified_address", "suppressed"})
NOT_NEEDED = "fallback_not_needed"
SKIPPED = "skipped"


class FallbackError(ValueError):
    """A fallback setting that cannot work; the message says why."""


def parse_fallback(value: Any, channels: Sequence[str] | None = None) -> dict[str, str]:
    """Check a fallback setting; ``channels`` (the rule's) must hold both sides."""
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise FallbackError(
            'write it as {"sms": "email"}: the fallback channel, then the one it replaces'
        )
    out: dict[str, str] = {}
    for alternative, primary in value.items():
        if not isinstance(alternative, str) or not isinstance(primary, str):
            raise FallbackError("channel names are strings")
        if alternative == primary:
            raise FallbackError(f"'{alternative}' cannot stand in for itself")
        if channels is not None:
            for name in (alternative, primary):
                if name not in channels:
                    raise FallbackError(
                        f"'{name}' is not one of the rule's channels ({', '.join(channels)})"
                    )
        out[alternative] = primary
    for start in out:  # no cycles: sms -> email -> sms
        seen, current = {start}, out[start]
        while current in out:
            if current in seen:
                raise FallbackError(f"the fallbacks go round in a circle through '{current}'")
            seen.add(current)
            current = out[current]
    return out


def apply_fallback(deliveries: Sequence[Any], fallback: Mapping[str, str]) -> tuple[Any, ...]:
    """Skip each fallback channel (``NOT_NEEDED``) unless the channel it stands
    in for was skipped as unreachable; deliveries are named tuples with
    ``channel``, ``status`` and ``skip_reason``."""
    if not fallback:
        return tuple(deliveries)
    by_channel = {d.channel: d for d in deliveries}
    out = []
    for d in deliveries:
        primary = by_channel.get(fallback.get(d.channel, ""))
        needed = primary is None or (
            primary.status == SKIPPED and primary.skip_reason in UNREACHABLE
        )
        if d.channel in fallback and not needed and d.status != SKIPPED:
            d = d._replace(status=SKIPPED, skip_reason=NOT_NEEDED, hold_reason="", due_at=None)
        out.append(d)
    return tuple(out)
