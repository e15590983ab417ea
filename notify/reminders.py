"""Reminders and delayed sends: when a rule's deliveries are due, whether a
reminder still makes sense at send time, and scheduling or cancelling events.

* ``send_time`` (fan-out): a rule with ``delay`` makes its deliveries due that
  long after fan-out ("delayed"); a rule with ``send_at_path`` reads an ISO
  date-time from the payload and adds ``send_at_offset`` ("scheduled"). A
  time already past is due at once. A missing or invalid payload time raises
  ``SendAtError``: fan-out then writes nothing for that rule, records the
  reason on the event (``Event.error``) and goes on with the other rules;
  the event itself is kept and counts as processed (its payload will not
  change, so trying again cannot help; fix the rule or re-send the event).
* ``CancelCheck`` (dispatch): a rule's ``cancel_condition`` is evaluated just
  before rendering, against the event's payload refreshed with the current
  row of the object it is about (``object_ref``). A deleted object cancels.
* ``schedule`` and ``cancel``: ``notify.schedule`` stores an event to be
  fanned out later; ``notify.cancel`` withdraws it (or what is still pending
  of it) by idempotency key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from channels.base import Status
from rules.conditions import CompiledCondition, ConditionError, compile_condition
from rules.index import CompiledRule

from .models import Delivery, Event

log = logging.getLogger("notify.reminders")

# Why a delivery waits, as recorded in ``Delivery.hold_reason``.
DELAYED = "delayed"
SCHEDULED = "scheduled"

# Skip reasons of cancelled deliveries (``Delivery.skip_reason`` holds 50 characters;
# the full text goes into ``error_message``).
OBJECT_DELETED = "object deleted"
CANCELLED_BY_CALLER = "cancelled by the caller"


# -- fan-out: when ---------------------------------------------------------------------


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


# -- dispatch: still wanted? --------------------------------------------------------------


class Verdict(NamedTuple):
    """Why a delivery must not be sent: ``status`` is CANCELLED, or FAILED when
    the cancel condition cannot be evaluated (shown to ops, never guessed)."""

    status: str
    skip_reason: str
    message: str


@lru_cache(maxsize=256)
def compiled_cancel_condition(source: str) -> CompiledCondition | None:
    return compile_condition(source)


class CancelCheck:
    """Evaluates cancel conditions for one dispatch batch; each object is
    loaded once per batch however many recipients its reminder has."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Any] | None] = {}

    def current_object(self, object_ref: str) -> dict[str, Any] | None:
        """The object's fresh snapshot; ``None`` if it no longer exists.
        Raises ``LookupError`` or ``ValueError`` for a reference that cannot be read."""
        if object_ref not in self._objects:
            from .events import snapshot

            label, _, pk = object_ref.rpartition(":")
            app_label, _, model_name = label.partition(".")
            model = apps.get_model(app_label, model_name)  # LookupError
            try:
                instance = model._base_manager.filter(pk=pk).first()
            except (ValueError, TypeError, ValidationError) as exc:
                raise ValueError(f"bad primary key in {object_ref!r}: {exc}") from exc
            self._objects[object_ref] = None if instance is None else snapshot(instance)
        return self._objects[object_ref]

    def verdict(self, source: str, event: Event, context: dict[str, Any]) -> Verdict | None:
        """``None`` to go on sending; otherwise what the delivery becomes.

        ``context`` is the event's condition context (payload, event, actor);
        its payload is refreshed with the object's current fields."""
        source = (source or "").strip()
        if not source:
            return None
        payload = context.get("payload") if isinstance(context.get("payload"), dict) else {}
        if event.object_ref:
            try:
                current = self.current_object(event.object_ref)
            except (LookupError, ValueError) as exc:
                return Verdict(
                    Status.FAILED, "cancel_condition", f"cannot load {event.object_ref}: {exc}"
                )
            if current is None:
                return Verdict(
                    Status.CANCELLED,
                    OBJECT_DELETED,
                    f"{OBJECT_DELETED}: {event.object_ref} no longer exists",
                )
            payload = {**payload, **current}
        try:
            condition = compiled_cancel_condition(source)
            holds = condition is not None and condition.evaluate({**context, "payload": payload})
        except ConditionError as exc:
            return Verdict(Status.FAILED, "cancel_condition", f"cancel condition: {exc}")
        if not holds:
            return None
        reason = f"cancel condition true: {source}"
        return Verdict(Status.CANCELLED, reason[:50], reason)


# -- scheduling and cancelling events ---------------------------------------------------


def schedule(
    event_type: str, payload: dict[str, Any] | None = None, *, at: datetime, **kwargs: Any
) -> Event:
    """Store an event now, to be fanned out at ``at`` (an aware datetime; a time
    already past is due at once). Keyword arguments are ``trigger``'s; give an
    ``idempotency_key`` to be able to ``cancel`` it."""
    from .events import trigger

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
    if cancelled or deliveries.filter(skip_reason=CANCELLED_BY_CALLER).exists():
        return Cancellation(event, False, cancelled)  # (again: nothing new to cancel)
    if deliveries.exclude(status__in=[Status.SKIPPED, Status.CANCELLED]).exists():
        raise NotCancellable("already_sent", "every delivery of the event was sent already", event)
    raise NotCancellable("nothing_pending", "the event has nothing left to send", event)
