"""Model changes become events: the ONE receiver machinery, payload shape and
failure policy shared by admin signal bindings (``rules.bindings``) and
``notify.emit_on`` (``notify.intake.model_signals``).

Why it lives in ``rules/``: the bindings are here and ``rules`` never imports
``notify``, while ``notify`` may import ``rules``. So the shared part sits
beside the bindings and knows nothing of the pipeline; each way of choosing
which changes become events is a ``ModelEventSource`` that also says how its
events are stored (bindings through ``NOTIFY["BINDING_TRIGGER"]``, ``emit_on``
by calling ``notify.intake.trigger.trigger``).

**What is received** (``ModelEventReceivers``):

* *created* / *updated*: ``post_save``. For a model whose updates are wanted,
  ``pre_save`` reads the row as stored, so an update says what changed.
* *deleted*: the events (payload, actor, recipients) are built in
  ``pre_delete``, while the row and its relations exist, and stored in
  ``post_delete``.
* Fixtures being loaded (``raw=True``) make no events. ``QuerySet.update()``,
  ``bulk_create()``, ``bulk_update()`` and raw SQL send no Django signals, so
  they make none either.

Events are stored inside the transaction of the change and processed only
after it commits; a rolled-back change leaves no event.

**The payload** (``change_payload``)::

    {"model": "shop.order", "pk": 7,
     "object": {"number": "A-7", "customer": 42, ...},   # the row, by field name
     "changed": ["status"],                               # updates only (None: unknown)
     "changes": {"status": {"old": "new", "new": "paid"}}}  # updates only

``object`` holds the chosen fields (default: every concrete field), foreign
keys as ids under the field's name; a field that looks like a secret
(``SENSITIVE``) is never included. ``changes`` holds old and new values of the
changed fields that are in ``object``; ``changed`` names every changed field
(a name only, so a password change can be an event).

**Failure policy** (``store_events``): a failed event store fails the change.
The store's error is raised out of ``save()`` / ``delete()`` as
``EventNotStored``, so inside ``transaction.atomic()`` (or with
``ATOMIC_REQUESTS``) the change rolls back with its event: an accepted change
never loses its event silently. (A ``delete()`` is atomic by itself; a
``save()`` in autocommit has already written its row when ``post_save`` runs,
and the caller gets the error.)
"""

from __future__ import annotations

import datetime
import decimal
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

log = logging.getLogger("rules.model_events")

CREATED, UPDATED, DELETED = "created", "updated", "deleted"

# Field names (or snake_case parts of them) that hold secrets: never in a payload.
SENSITIVE = re.compile(
    r"(^|_)(pass|password|passwd|passphrase|secret|token|api_?key|otp|pin|hash|salt|private_key|credentials?)(_|$)",
    re.IGNORECASE,
)


def is_sensitive(name: str) -> bool:
    return bool(SENSITIVE.search(name))


def json_value(value: Any) -> Any:
    """A value the event's JSON can hold (dates, decimals and UUIDs are turned
    into strings by the trigger; anything else becomes its ``str``)."""
    if value is None or isinstance(
        value,
        str | int | float | bool | datetime.date | datetime.time | decimal.Decimal | uuid.UUID,
    ):
        return value
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def _fields(model: type[models.Model], names: Iterable[str] | None) -> list[models.Field]:
    if names is None:
        return list(model._meta.concrete_fields)
    out = []
    for name in names:
        try:
            f = model._meta.get_field(name)
        except FieldDoesNotExist:  # the model changed since the fields were chosen
            log.warning("%s has no field %r any more", model._meta.label_lower, name)
            continue
        if getattr(f, "concrete", False) and not f.many_to_many:
            out.append(f)
    return out


def object_values(instance: models.Model, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The row's fields as a payload's ``object`` holds them: by field name,
    foreign keys as ids, secrets never; ``names`` picks fields (default all)."""
    return {
        f.name: json_value(f.value_from_object(instance))
        for f in _fields(type(instance), names)
        if not is_sensitive(f.name)
    }


def object_ref(instance: models.Model) -> str:
    """``app_label.model:pk``, the event's reference to the row it is about."""
    return f"{instance._meta.label_lower}:{instance.pk}"


def database_row(instance: models.Model, using: str) -> dict[str, Any] | None:
    """The instance's row as stored, by field name (``None``: not stored yet)."""
    model = type(instance)
    concrete = model._meta.concrete_fields
    row = (
        model._base_manager.using(using)
        .filter(pk=instance.pk)
        .values(*(f.attname for f in concrete))
        .first()
    )
    if row is None:
        return None
    return {f.name: row[f.attname] for f in concrete}


def _normalised(f: models.Field, value: Any) -> Any:
    try:
        return f.to_python(value)
    except Exception:
        return value


def changed_fields(instance: models.Model, before: dict[str, Any]) -> list[str]:
    """The concrete fields whose value differs from ``before`` (the stored row)."""
    changed = []
    for f in type(instance)._meta.concrete_fields:
        if f.name not in before:
            continue
        if _normalised(f, f.value_from_object(instance)) != _normalised(f, before[f.name]):
            changed.append(f.name)
    return changed


@dataclass(frozen=True, slots=True)
class Change:
    """An update: the row as it was stored (``None``: unknown) and what changed."""

    before: dict[str, Any] | None
    changed: list[str] | None

    @classmethod
    def of(cls, instance: models.Model, before: dict[str, Any] | None) -> Change:
        return cls(before, changed_fields(instance, before) if before is not None else None)


def change_payload(
    instance: models.Model, names: Iterable[str] | None = None, change: Change | None = None
) -> dict[str, Any]:
    """THE payload of an event from a model change (see the module docstring)."""
    payload: dict[str, Any] = {
        "model": instance._meta.label_lower,
        "pk": json_value(instance.pk),
        "object": object_values(instance, names),
    }
    if change is not None:
        before = change.before or {}
        payload["changed"] = change.changed
        payload["changes"] = {
            name: {"old": json_value(before[name]), "new": payload["object"][name]}
            for name in (change.changed or ())
            if name in payload["object"]
        }
    return payload


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One event to store about one row; ``origin`` names who asked for it."""

    event_type: str
    payload: dict[str, Any]
    object_ref: str
    actor: Any = None
    recipients: tuple[Any, ...] = ()
    origin: str = ""


class EventNotStored(Exception):
    """An event about a model change could not be stored; the change fails with it."""


class ModelEventSource:
    """One way of choosing which changes become which events, and of storing them."""

    def wants(self, sender: type[models.Model], kind: str) -> bool:
        """Does a ``kind`` (created, updated, deleted) change of ``sender`` make events?"""
        raise NotImplementedError

    def events(
        self, sender: type[models.Model], instance: models.Model, kind: str, change: Change | None
    ) -> list[ModelEvent]:
        """The events of this change (``change`` is given for updates only)."""
        raise NotImplementedError

    def store(self, event: ModelEvent) -> None:
        """Store one event in the current transaction (raise if it cannot)."""
        raise NotImplementedError


def store_events(source: ModelEventSource, events: Iterable[ModelEvent]) -> None:
    """Store each event; the first that fails fails the change (``EventNotStored``)."""
    for event in events:
        try:
            source.store(event)
        except Exception as exc:
            raise EventNotStored(
                f"{event.origin or 'model event'}: the '{event.event_type}' event about "
                f"{event.object_ref} could not be stored, so the change fails with it: {exc}"
            ) from exc


class ModelEventReceivers:
    """The post_save / pre_delete / post_delete (and pre_save) receivers of one
    source. ``uid`` keeps its receivers and the state it parks on instances
    apart from any other source's."""

    def __init__(self, source: ModelEventSource, uid: str):
        self.source = source
        self.uid = uid
        self._before = f"_model_events_before:{uid}"  # instance attribute: the stored row
        self._deleted = f"_model_events_deleted:{uid}"  # instance attribute: delete events
        self._connected: list[tuple[Any, Any, str]] = []

    def pre_save(
        self,
        sender: Any,
        instance: models.Model,
        raw: bool = False,
        using: str = "default",
        **kw: Any,
    ) -> None:
        if raw or instance._state.adding or instance.pk is None:
            return
        if self.source.wants(sender, UPDATED):
            instance.__dict__[self._before] = database_row(instance, using)

    def post_save(
        self, sender: Any, instance: models.Model, created: bool, raw: bool = False, **kw: Any
    ) -> None:
        before = instance.__dict__.pop(self._before, None)
        kind = CREATED if created else UPDATED
        if raw or not self.source.wants(sender, kind):
            return
        change = Change.of(instance, before) if kind == UPDATED else None
        store_events(self.source, self.source.events(sender, instance, kind, change))

    def pre_delete(self, sender: Any, instance: models.Model, **kw: Any) -> None:
        if self.source.wants(sender, DELETED):
            instance.__dict__[self._deleted] = self.source.events(sender, instance, DELETED, None)

    def post_delete(self, sender: Any, instance: models.Model, **kw: Any) -> None:
        events = instance.__dict__.pop(self._deleted, None)
        if events:
            store_events(self.source, events)

    def connect(
        self,
        save_senders: Iterable[type[models.Model] | None] = (),
        delete_senders: Iterable[type[models.Model]] = (),
    ) -> None:
        """Receive saves of ``save_senders`` (``None``: every model) and deletes
        of ``delete_senders`` (always by model: a delete receiver for every model
        would stop Django from deleting anything fast)."""
        pairs = [
            (signal, receiver, sender)
            for sender in save_senders
            for signal, receiver in ((pre_save, self.pre_save), (post_save, self.post_save))
        ] + [
            (signal, receiver, sender)
            for sender in delete_senders
            for signal, receiver in ((pre_delete, self.pre_delete), (post_delete, self.post_delete))
        ]
        for signal, receiver, sender in pairs:
            label = sender._meta.label_lower if sender is not None else "*"
            uid = f"{self.uid}:{receiver.__name__}:{label}"
            signal.connect(receiver, sender=sender, dispatch_uid=uid, weak=False)
            self._connected.append((signal, sender, uid))

    def disconnect(self) -> None:
        for signal, sender, uid in self._connected:
            signal.disconnect(sender=sender, dispatch_uid=uid)
        self._connected.clear()
