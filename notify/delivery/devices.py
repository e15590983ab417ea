"""A push goes to every device of its recipient: one send per device token,
each its own attempt on the record, summed into the delivery's outcome.

A user signs in on a phone, a tablet and two browsers; each registered itself
(``notify.preferences.devices``), and each should ring. The delivery stays one
row (one per event, rule, user and channel); its attempts are one row per
device. How the answers add up (``sum_outcomes``, pure):

* a device the provider says is gone (404/410, ``UNREGISTERED``,
  ``BadDeviceToken``) is deleted by the send step and fails alone;
* while any device's error is transient and attempts are left, the delivery is
  retried, and the retry goes only to the devices that have not had the push
  yet (``devices_already_sent``: the attempt rows say which);
* otherwise it is sent when at least one device had it, else it failed (or is
  dead) with the first device's error.

Digests are not split this way: a digest goes to the best device.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from channels.base import Channel, OutgoingMessage
from notify.delivery.outcomes import Target, done, send_one
from notify.delivery.retry import RetryPolicy
from notify.models import DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import Outcome
from notify.preferences.decide import UserPrefs
from notify.preferences.devices import DEVICE_KINDS

Attempt = DeliveryAttempt.Outcome


def device_addresses(prefs: UserPrefs, kind: str | None, best: str) -> list[str] | None:
    """Every device a push of ``kind`` goes to, best first (suppressed ones
    left out); ``None`` when ``kind`` is not a device kind (one address)."""
    if kind not in DEVICE_KINDS:
        return None
    found = [a for a in prefs.devices.get(kind, ()) if (kind, a.lower()) not in prefs.suppressed]
    if best and best not in found:
        found.insert(0, best)
    return found


def devices_already_sent(target: Target) -> set[str]:
    """Devices an earlier attempt of this delivery reached (also before an
    admin's "retry", which starts the count again)."""
    return set(
        DeliveryAttempt.objects.filter(delivery_id=target.id, outcome=Attempt.SENT).values_list(
            "sent__to", flat=True
        )
    )


def send_to_devices(
    channel: Channel,
    target: Target,
    message: OutgoingMessage,
    devices: list[str],
    policy: RetryPolicy,
    started: datetime,
) -> Outcome:
    """Send ``message`` to each device not reached yet; the summed outcome."""
    reached = devices_already_sent(target)
    parts = [
        send_one(channel, target, replace(message, to=device), policy)
        for device in devices
        if device not in reached
    ]
    return sum_outcomes(target, started, parts, reached_before=bool(reached))


def sum_outcomes(
    target: Target, started: datetime, parts: list[Outcome], reached_before: bool = False
) -> Outcome:
    """The delivery's outcome from its devices' (see the module docstring)."""
    if len(parts) == 1 and not reached_before:
        return parts[0]
    if not parts:  # every device left had it on an earlier attempt
        return done(target, started, Status.SENT, "")
    sent = [p for p in parts if p.status == Status.SENT]
    pending = [p for p in parts if p.status == Status.PENDING]
    if pending:
        soonest = min(pending, key=lambda p: p.next_attempt_at or p.finished_at)
        chosen = soonest
    elif sent:
        chosen = sent[0]
    elif reached_before:
        return replace(done(target, started, Status.SENT, ""), parts=tuple(parts))
    else:
        dead = [p for p in parts if p.status == Status.DEAD]
        chosen = (dead or parts)[0]
    return replace(
        chosen,
        started_at=started,
        finished_at=max(p.finished_at for p in parts),
        # Not an attempt only if no device's send was one.
        refund_attempt=all(p.refund_attempt for p in parts),
        parts=tuple(parts),
    )
