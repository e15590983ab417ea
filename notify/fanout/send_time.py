"""When a rule's deliveries are due: now, after the rule's ``delay`` ("delayed"),
or at an ISO date-time read from the payload plus ``send_at_offset``
("scheduled"). A time already past is due at once. A missing or invalid
payload time raises ``SendAtError``: fan-out then writes nothing for that
rule, records the reason on the event (``Event.error``) and goes on with the
other rules; the event itself is kept and counts as processed (its payload
will not change, so trying again cannot help; fix the rule or re-send it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rules.index import CompiledRule

# Why a delivery waits, as recorded in ``Delivery.hold_reason``.
DELAYED = "delayed"
SCHEDULED = "scheduled"


class SendAtError(ValueError):
    """A rule's payload time is missing or not an ISO date-time."""


def payload_value(payload: Any, path: str) -> Any:
    """``payload["a"]["b"]`` for ``"a.b"``; raises ``KeyError`` naming the path."""
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def parse_send_at(value: Any) -> datetime:
    """An ISO 8601 date-time (or date) string; naive times are UTC."""
    if not isinstance(value, str):
        raise SendAtError(f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SendAtError(f"not an ISO 8601 date-time: {value[:60]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def send_time(rule: CompiledRule, payload: Any, now: datetime) -> tuple[datetime | None, str]:
    """When the rule's deliveries are due and why they wait: ``(None, "")`` for now.

    ``send_at_path`` wins over ``delay`` when a rule has both."""
    if rule.send_at_path:
        try:
            at = parse_send_at(payload_value(payload, rule.send_at_path))
        except KeyError:
            raise SendAtError(f"the payload has no '{rule.send_at_path}'") from None
        except SendAtError as exc:
            raise SendAtError(f"payload '{rule.send_at_path}': {exc}") from None
        try:
            at += rule.send_at_offset or timedelta(0)
        except OverflowError:
            raise SendAtError(
                f"payload '{rule.send_at_path}' plus the offset is out of range"
            ) from None
        return (at, SCHEDULED) if at > now else (None, "")
    if rule.delay and rule.delay > timedelta(0):
        return now + rule.delay, DELAYED
    return None, ""
