"""Events in: ``trigger()`` from Python, model signals, the API and the CLI
all end here, in one function that stores the event before anyone hears
"accepted" and schedules fan-out for after the commit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models.signals import post_save, pre_save

from notify.fanout.payload import to_json
from notify.intake import group, rows
from notify.models import Event
from notify.runtime.handoff import get_dispatcher
from rules.model_events import CREATED, ModelEventReceivers

EVENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9_\-]+)*$")


def validate_event_type(event_type: Any) -> str:
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type) or len(event_type) > 200:
        raise ValidationError(
            "event type must be lowercase words separated by dots, e.g. 'order.shipped' "
            f"(got {event_type!r})"
        )
    return event_type


class IdempotencyKeyReused(ValidationError):
    """The idempotency key was used before for a different request."""


# One encoder for every fingerprint (json.dumps(cls=...) builds one per call;
# encode() keeps no state between calls, so threads can share it).
_FINGERPRINT_JSON = DjangoJSONEncoder(sort_keys=True).encode


def request_fingerprint(
    event_type: str,
    payload: Any,
    actor_id: Any,
    recipients: Any,
    scheduled_for: datetime | None = None,
) -> str:
    parts = [event_type, payload, actor_id, recipients]
    if scheduled_for is not None:  # (unscheduled events keep their old fingerprints)
        parts.append(scheduled_for.astimezone(UTC).isoformat())
    return hashlib.sha256(_FINGERPRINT_JSON(parts).encode()).hexdigest()


def _recipient_refs(recipients: Iterable[Any] | None) -> list[Any]:
    refs: list[Any] = []
    for item in recipients or ():
        if isinstance(item, models.Model):
            refs.append(item.pk)
        elif isinstance(item, (int, str)) and not isinstance(item, bool):
            refs.append(item)
        else:
            raise ValidationError(
                f"recipients must be users, user ids or email addresses, not {item!r}"
            )
    return refs


def trigger(
    event_type: str,
    payload: dict[str, Any] | None = None,
    *,
    actor: Any = None,
    recipients: Iterable[Any] | None = None,
    idempotency_key: str | None = None,
    source: str = Event.Source.PYTHON,
    object_ref: str = "",
    idempotency_scope: str = "",
    api_key: Any = None,
    scheduled_for: datetime | None = None,
) -> Event:
    """Store an event and schedule its fan-out for after the current transaction.

    With an ``idempotency_key`` seen before (in the same scope), the first event
    is returned and nothing new is stored; the same key with a different
    request raises ``IdempotencyKeyReused``. Inside ``transaction.atomic()`` the
    event commits or rolls back with the surrounding change. With
    ``scheduled_for`` (aware), fan-out waits until then (``notify.schedule``).
    Outside a transaction the event is committed together with the events other
    threads store at the same moment (``notify.intake.group``), and this returns
    only once it is committed.
    """
    validate_event_type(event_type)
    if scheduled_for is not None and (
        not isinstance(scheduled_for, datetime) or scheduled_for.tzinfo is None
    ):
        raise ValidationError("scheduled_for must be a timezone-aware datetime")
    if scheduled_for is not None:
        scheduled_for = scheduled_for.astimezone(UTC)  # as it reads back from the database
    payload = to_json({} if payload is None else payload)
    if not isinstance(payload, dict):
        raise ValidationError("payload must be a JSON object")
    actor_id = actor.pk if isinstance(actor, models.Model) else actor
    if actor_id is not None and not isinstance(actor, models.Model):
        from django.contrib.auth import get_user_model

        if isinstance(actor_id, bool) or not isinstance(actor_id, int):
            raise ValidationError(f"actor must be a user or a user id, not {actor!r}")
        if not get_user_model().objects.filter(pk=actor_id).exists():
            raise ValidationError(f"actor: no user with id {actor_id}")
    refs = _recipient_refs(recipients)
    fingerprint = request_fingerprint(event_type, payload, actor_id, refs, scheduled_for)
    fields = {
        "type": event_type,
        "payload": payload,
        "actor_id": actor_id,
        "recipients": refs,
        "source": source,
        "object_ref": object_ref,
        "idempotency_scope": idempotency_scope,
        "idempotency_key": idempotency_key,
        "request_hash": fingerprint,
        "api_key": api_key,
        "scheduled_for": scheduled_for,
    }
    using = router.db_for_write(Event)
    connection = connections[using]
    # Insert first, look the key up only when it is taken (the unique constraint
    # decides): a new key, the common case, costs no extra query.
    try:
        if connection.in_atomic_block or not connection.get_autocommit() or save_signals_wanted():
            with rows.one_writer_at_a_time(using), transaction.atomic(using=using):
                event = insert_event(fields, using)
        else:  # a transaction of its own: committed with the other threads' (group commit)
            event = Event(**fields)
            event.pk = group.insert_committed(event_row(event, connection), using)
            event._state.adding = False
            event._state.db = using
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = find_idempotent(idempotency_scope, idempotency_key)
        if existing is None:
            raise
        return same_request(existing, fingerprint)
    transaction.on_commit(lambda: event_committed(event.pk), using=using)
    return event


def insert_event(fields: dict[str, Any], using: str) -> Event:
    """The stored event: one INSERT with prepared values (``notify.intake.rows``),
    or ``save()`` when something listens to ``Event``'s model signals."""
    event = Event(**fields)
    if save_signals_wanted():
        event.save(force_insert=True, using=using)
        return event
    (event.pk,) = rows.insert_rows([event_row(event, connections[using])], using)
    event._state.adding = False
    event._state.db = using
    return event


def event_row(event: Event, connection: Any) -> tuple[Any, ...]:
    """``event``'s values as a row of ``rows.COLUMNS``."""
    return rows.event_row(
        connection,
        type=event.type,
        payload=event.payload,
        recipients=event.recipients,
        request_hash=event.request_hash,
        received_at=rows.datetime_value(event.received_at, connection),
        constants=rows.row_constants(connection),
        actor_id=event.actor_id,
        source=event.source,
        object_ref=event.object_ref,
        idempotency_scope=event.idempotency_scope,
        idempotency_key=event.idempotency_key,
        api_key_id=event.api_key_id,
        scheduled_for=event.scheduled_for,
    )


def save_signals_wanted() -> bool:
    """Whether a receiver of ``Event``'s pre_save / post_save would do anything
    with a new event. Model-event receivers (signal bindings, ``emit_on``)
    listen to every model and say for themselves whether they want a model's
    creations: they never want ``Event``'s (the service's own tables are never
    bound), so they alone do not cost an event its fast insert."""
    for signal in (pre_save, post_save):
        if not signal.has_listeners(Event):
            continue
        sync_receivers, async_receivers = signal._live_receivers(Event)
        for receiver in (*sync_receivers, *async_receivers):
            owner = getattr(receiver, "__self__", None)
            if not isinstance(owner, ModelEventReceivers) or owner.source.wants(Event, CREATED):
                return True
    return False


def same_request(existing: Event, fingerprint: str) -> Event:
    if existing.request_hash and existing.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key '{existing.idempotency_key}' was used for a different event (#{existing.pk})"
        )
    return existing


def find_idempotent(scope: str, key: str) -> Event | None:
    return Event.objects.filter(idempotency_scope=scope, idempotency_key=key).first()


def event_committed(event_id: int) -> None:
    """After commit: process at once (EAGER), wake the worker pool, or hand the
    event to Celery (with ``NOTIFY["BROKER_URL"]``); see ``notify.runtime.handoff``.
    Never raises: the event is stored, and a lost hand-off is relayed."""
    get_dispatcher().event_committed(event_id)
