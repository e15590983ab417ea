"""Model changes in: ``emit_on(Model, created=..., updated=..., deleted=...)``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import models

from notify.fanout.payload import snapshot
from notify.intake.trigger import trigger
from notify.models import Event


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
