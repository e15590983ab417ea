"""Model changes in: ``emit_on(Model, created=..., updated=..., deleted=...)``.

The receivers, the payload shape and the failure policy are the ones admin
signal bindings use: ``rules.model_events`` (it lives in ``rules/`` because the
bindings do and ``rules`` never imports ``notify``); this module only says
which changes of one model become which events, and stores them with
``notify.intake.trigger.trigger``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import models

from notify.intake.trigger import trigger, validate_event_type
from notify.models import Event
from rules.model_events import (
    CREATED,
    DELETED,
    UPDATED,
    Change,
    ModelEvent,
    ModelEventReceivers,
    ModelEventSource,
    change_payload,
    object_ref,
)


class EmitOn(ModelEventSource):
    """The events of one ``emit_on`` call: one model, an event type per kind."""

    def __init__(
        self,
        model: type[models.Model],
        event_types: dict[str, str | None],
        fields: Iterable[str] | None,
        payload: Callable[[models.Model], dict[str, Any]] | None,
        actor: Callable[[models.Model], Any] | None,
        recipients: Callable[[models.Model], Iterable[Any]] | None,
    ):
        self.model = model
        self.event_types = event_types
        self.fields = list(fields) if fields is not None else None
        self.payload = payload
        self.actor = actor
        self.recipients = recipients

    def wants(self, sender: type[models.Model], kind: str) -> bool:
        return sender is self.model and self.event_types.get(kind) is not None

    def events(
        self, sender: type[models.Model], instance: models.Model, kind: str, change: Change | None
    ) -> list[ModelEvent]:
        data = (
            self.payload(instance)
            if self.payload is not None
            else change_payload(instance, self.fields, change)
        )
        event_type = self.event_types[kind]
        assert event_type is not None  # (wants() said so)
        return [
            ModelEvent(
                event_type=event_type,
                payload=data,
                object_ref=object_ref(instance),
                actor=self.actor(instance) if self.actor else None,
                recipients=tuple(self.recipients(instance)) if self.recipients else (),
                origin=f"emit_on({self.model._meta.label_lower})",
            )
        ]

    def store(self, event: ModelEvent) -> None:
        trigger(
            event.event_type,
            event.payload,
            actor=event.actor,
            recipients=event.recipients,
            source=Event.Source.SIGNAL,
            object_ref=event.object_ref,
        )


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

    The payload is the one signal bindings make (``rules.model_events``):
    ``{"model": "shop.order", "pk": 7, "object": {...}}`` with ``fields`` (by
    field name; default every field but secrets) under ``object``; an update
    adds ``changed`` and ``changes``. A ``payload`` callable replaces it.

    The event is stored in the transaction of the change (wrap the change in
    ``transaction.atomic()`` or use ``ATOMIC_REQUESTS``) and fanned out only
    after it commits; a rolled-back change sends nothing. **A failed event
    store fails the change**: ``save()``/``delete()`` raise
    ``rules.model_events.EventNotStored`` and the transaction rolls back. A
    delete's payload is taken in ``pre_delete``, while the row and its
    relations still exist. ``QuerySet.update()``, ``bulk_create`` and raw SQL
    send no signals, so they make no events.
    """
    event_types = {CREATED: created, UPDATED: updated, DELETED: deleted}
    for event_type in event_types.values():
        if event_type is not None:
            validate_event_type(event_type)
    label = model._meta.label_lower
    source = EmitOn(model, event_types, fields, payload, actor, recipients)
    receivers = ModelEventReceivers(source, f"notify.emit_on:{label}:{created}:{updated}:{deleted}")
    receivers.connect(
        save_senders=[model] if created or updated else [],
        delete_senders=[model] if deleted else [],
    )
    return receivers.disconnect
