"""``notify.schedule`` stores an event to be fanned out later; ``notify.cancel``
withdraws it (or what is still pending of it) by idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from notify.intake.trigger import trigger
from notify.models import Delivery, Event
from notify.models.status import Status
from notify.outbox.runs import cancel_runs

# Skip reason of deliveries cancelled by ``notify.cancel``.
CANCELLED_BY_CALLER = "cancelled by the caller"


def schedule(
    event_type: str, payload: dict[str, Any] | None = None, *, at: datetime, **kwargs: Any
) -> Event:
    """Store an event now, to be fanned out at ``at`` (an aware datetime; a time
    already past is due at once). Keyword arguments are ``trigger``'s; give an
    ``idempotency_key`` to be able to ``cancel`` it."""
    if not isinstance(at, datetime):
        raise ValidationError(f"at must be a datetime, not {type(at).__name__}")
    if timezone.is_naive(at):
        raise ValidationError("at must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return trigger(event_type, payload, scheduled_for=at, **kwargs)


class EventNotFound(LookupError):
    """No event with this idempotency key (in this scope)."""


class NotCancellable(Exception):
    """Nothing can be cancelled any more; ``code`` says why."""

    def __init__(self, code: str, message: str, event: Event):
        super().__init__(message)
        self.code = code  # "already_sent", "processing" or "nothing_pending"
        self.message = message
        self.event = event


@dataclass(frozen=True, slots=True)
class Cancellation:
    event: Event
    event_cancelled: bool  # the event will never be fanned out
    deliveries_cancelled: int  # pending deliveries of a processed event
    runs_cancelled: int = 0  # workflow runs of the event stopped (no step runs again)


def cancel(idempotency_key: str, scope: str = "") -> Cancellation:
    """Cancel the event stored with ``idempotency_key`` in ``scope``.

    An event not yet fanned out is marked ``cancelled`` and never will be; for
    one already fanned out, every delivery not yet sent (pending, held for
    later, or waiting for a digest not yet built) is cancelled. Cancelling
    twice is harmless. Raises ``EventNotFound``, or ``NotCancellable`` when
    everything was sent already, or while the event is being fanned out (try
    again in a moment).
    """
    event = Event.objects.filter(idempotency_scope=scope, idempotency_key=idempotency_key).first()
    if event is None:
        raise EventNotFound(f"no event with idempotency key {idempotency_key!r}")
    # Conditional updates: a worker claiming the event at the same moment
    # either wins (and the event is "processing") or finds it cancelled.
    waiting = [Event.State.RECEIVED, Event.State.FAILED]
    if Event.objects.filter(pk=event.pk, status__in=waiting).update(
        status=Event.State.CANCELLED, claimed_until=None
    ):
        event.refresh_from_db()
        return Cancellation(event, True, 0)
    event.refresh_from_db()
    if event.status == Event.State.CANCELLED:
        return Cancellation(event, True, 0)
    if event.status == Event.State.PROCESSING:
        raise NotCancellable(
            "processing", "the event is being fanned out right now; try again shortly", event
        )
    now = timezone.now()
    deliveries = Delivery.objects.filter(notification__event=event)
    # Its workflow runs first: no step runs again (notify.outbox.runs.cancel_runs).
    runs = cancel_runs(Q(event=event, batch_key=""), CANCELLED_BY_CALLER, now)
    with transaction.atomic():
        cancelled = Delivery.objects.filter(
            pk__in=list(
                deliveries.filter(
                    status__in=[Status.PENDING, Status.DIGEST], digest__isnull=True
                ).values_list("pk", flat=True)
            ),
            status__in=[Status.PENDING, Status.DIGEST],
            digest__isnull=True,
        ).update(
            status=Status.CANCELLED,
            skip_reason=CANCELLED_BY_CALLER,
            hold_reason="",
            claimed_until=None,
            updated_at=now,
        )
    if runs or cancelled or deliveries.filter(skip_reason=CANCELLED_BY_CALLER).exists():
        return Cancellation(event, False, cancelled, runs)  # (again: nothing new to cancel)
    if deliveries.exclude(status__in=[Status.SKIPPED, Status.CANCELLED]).exists():
        raise NotCancellable("already_sent", "every delivery of the event was sent already", event)
    raise NotCancellable("nothing_pending", "the event has nothing left to send", event)
