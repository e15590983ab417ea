"""Events in: ``trigger()`` from Python, model signals, the API and the CLI
all end here, in one function that stores the event before anyone hears
"accepted" and schedules fan-out for after the commit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, models, router, transaction

from rules import bindings

from .models import Event

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


def to_json(value: Any) -> Any:
    """Round-trip through JSON so what is stored is what a worker reads back
    (dates become ISO strings, Decimals strings, UUIDs strings). NaN and
    Infinity are refused: they are not JSON and PostgreSQL rejects them."""
    try:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False))
    except ValueError as exc:
        raise ValidationError(f"payload is not JSON-safe: {exc}") from exc
    except TypeError as exc:
        raise ValidationError(f"payload cannot be stored as JSON: {exc}") from exc


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
    body = json.dumps(parts, sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(body.encode()).hexdigest()


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
    if idempotency_key is not None:
        existing = find_idempotent(idempotency_scope, idempotency_key)
        if existing is not None:
            return same_request(existing, fingerprint)
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
    try:
        with transaction.atomic(using=using):
            event = Event.objects.create(**fields)
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = find_idempotent(idempotency_scope, idempotency_key)
        if existing is None:
            raise
        return same_request(existing, fingerprint)
    transaction.on_commit(lambda: event_committed(event.pk), using=using)
    return event


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
    event to Celery (with ``NOTIFY["BROKER_URL"]``); see ``notify.dispatchers``.
    Never raises: the event is stored, and a lost hand-off is relayed."""
    from .dispatchers import get_dispatcher

    get_dispatcher().event_committed(event_id)


# -- model signals ------------------------------------------------------------------

# The secret-field rule lives with the signal bindings (notify may import
# rules, not the reverse): one definition for both ways of snapshotting a row.
SENSITIVE = bindings.SENSITIVE


def snapshot(instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """A JSON-safe dict of the instance's concrete fields (foreign keys as ids).

    Fields that look like secrets are never included, even when named.
    """
    wanted = set(fields) if fields is not None else None
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        name = field.attname if field.is_relation else field.name
        if wanted is not None and field.name not in wanted and name not in wanted:
            continue
        if SENSITIVE.search(field.name):
            continue
        data[field.name if not field.is_relation else field.attname] = field.value_from_object(
            instance
        )
    return to_json(data)


def emit_on(
    model: type[models.Model],
    *,
    created: str | None = None,
    updated: str | None = None,
    deleted: str | None = None,
    fields: Iterable[str] | None = None,
    payload: Callable[[models.Model], dict[str, Any]] | None = None,
    actor: Callable[[models.Model], Any] | None = None,
    recipients: Callable[[models.Model], Iterable[Any]] | None = None,
) -> Callable[[], None]:
    """Turn a model's saves and deletes into events; returns a disconnect function.

    ``emit_on(Order, created="order.created", updated="order.updated",
    deleted="order.deleted", recipients=lambda o: [o.customer])``

    The event is stored in the transaction of the change (wrap the change in
    ``transaction.atomic()`` or use ``ATOMIC_REQUESTS``) and fanned out only
    after it commits; a rolled-back change sends nothing. A delete's payload is
    taken in ``pre_delete``, while the row and its relations still exist.
    ``QuerySet.update()``, ``bulk_create`` and raw SQL send no signals, so they
    make no events.
    """
    from django.db.models.signals import post_delete, post_save, pre_delete

    make_payload = payload or (lambda instance: snapshot(instance, fields))
    label = model._meta.label_lower
    uid = f"notify.emit_on:{label}:{created}:{updated}:{deleted}"
    pending: dict[tuple[str, Any], tuple[dict[str, Any], Any, list[Any]]] = {}

    def ref(instance: models.Model) -> str:
        return f"{label}:{instance.pk}"

    def extras(instance: models.Model) -> tuple[Any, list[Any]]:
        return (
            actor(instance) if actor else None,
            list(recipients(instance)) if recipients else [],
        )

    def on_save(
        sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any
    ) -> None:
        event_type = created_type if created else updated
        if raw or event_type is None:
            return
        who, to = extras(instance)
        trigger(
            event_type,
            make_payload(instance),
            actor=who,
            recipients=to,
            source=Event.Source.SIGNAL,
            object_ref=ref(instance),
        )

    def before_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
        pending[(kwargs.get("using") or "default", instance.pk)] = (
            make_payload(instance),
            *extras(instance),
        )

    def on_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
        key = (kwargs.get("using") or "default", instance.pk)
        data, who, to = pending.pop(key, (make_payload(instance), None, []))
        trigger(
            deleted,
            data,
            actor=who,
            recipients=to,
            source=Event.Source.SIGNAL,
            object_ref=f"{label}:{key[1]}",
        )

    created_type = created
    if created or updated:
        post_save.connect(on_save, sender=model, dispatch_uid=uid + ":save", weak=False)
    if deleted:
        pre_delete.connect(
            before_delete, sender=model, dispatch_uid=uid + ":pre_delete", weak=False
        )
        post_delete.connect(on_delete, sender=model, dispatch_uid=uid + ":delete", weak=False)

    def disconnect() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        pre_delete.disconnect(sender=model, dispatch_uid=uid + ":pre_delete")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")

    return disconnect
