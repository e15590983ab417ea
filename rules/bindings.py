"""Signal bindings: model saves and deletes become events, configured in admin.

A ``SignalBinding`` row says "when a <model> is <created|updated|deleted|
m2m-changed>, trigger <event type> with these fields". Nothing is connected
per binding: ``connect_receivers`` (called once, from ``RulesConfig.ready``)
connects ONE generic receiver per Django signal, and every receiver asks the
per-process ``binding_index`` (rebuilt when the ``bindings`` revision moves,
like the rule index) whether the sender is bound. A binding saved in admin
therefore applies in every running process at its next configuration check
(``NOTIFY["CONFIG_CHECK_INTERVAL"]``), without a restart.

Created, updated and deleted go through ``rules.model_events``, the receiver
machinery, payload shape and failure policy ``notify.emit_on`` shares: the
payload is ``{"model", "pk", "object": {allow-listed fields}}``, an update adds
``changed`` and ``changes``, and "only when these fields changed" is honoured
from the row read in ``pre_save``; a delete's payload is taken in
``pre_delete``. **A failed event store fails the change** (``EventNotStored``
out of ``save()``/``delete()``; the change's transaction rolls back).

* **m2m_changed** (bindings only): ``post_add``, ``post_remove`` and
  ``post_clear`` (the cleared ids are read in ``pre_clear``), from either
  side of the relation (a reverse ``clear()`` is not reported); the payload
  adds ``m2m`` (``field``, ``action``, ``pks``).

Events are stored by ``NOTIFY["BINDING_TRIGGER"]`` (a dotted path, default
``notify.intake.trigger.trigger``: the rules app never imports the pipeline) inside
the transaction of the change and fanned out after it commits.

What sends no Django signal makes no event: ``QuerySet.update()``,
``bulk_create()``, ``bulk_update()``, ``QuerySet.delete()`` of models that
Django deletes fast (no receivers), and raw SQL.

Secrets never reach a payload: a field whose name looks like a password,
token, secret, key, hash or salt cannot be chosen (``validate_binding``, used
by the model's ``clean`` and the admin form) and is dropped again when the
index is built, for a row edited in the database directly.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps as global_apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models.signals import m2m_changed
from django.utils.module_loading import import_string

from .model_events import (
    SENSITIVE,  # noqa: F401  (re-exported: the secret-field rule)
    Change,
    ModelEvent,
    ModelEventReceivers,
    ModelEventSource,
    change_payload,
    is_sensitive,
    json_value,
    object_ref,
    store_events,
)

log = logging.getLogger("rules.bindings")

EVENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9_\-]+)*$")

# Apps whose models are never bound: the service's own tables (an event about
# an event would loop), and Django's bookkeeping.
EXCLUDED_APPS = frozenset({"notify", "rules", "contenttypes", "sessions", "admin", "anymail"})
EXCLUDED_MODELS = frozenset({"auth.permission"})

DEFAULT_TRIGGER = "notify.intake.trigger.trigger"
_CLEARED = "_rules_binding_cleared"  # instance attribute: ids before an m2m clear


def is_bindable(model: type[models.Model]) -> bool:
    opts = model._meta
    return not (
        opts.app_label in EXCLUDED_APPS
        or opts.label_lower in EXCLUDED_MODELS
        or opts.auto_created
        or opts.abstract
        or opts.proxy
        or not opts.managed
    )


def bindable_models() -> list[type[models.Model]]:
    return [m for m in global_apps.get_models() if is_bindable(m)]


def payload_field_choices(model: type[models.Model]) -> list[str]:
    """The fields that may go into a payload: concrete, and not a secret."""
    return [f.name for f in model._meta.concrete_fields if not is_sensitive(f.name)]


def tracked_field_choices(model: type[models.Model]) -> list[str]:
    """The fields "only when these fields changed" may name (names only ever
    reach the payload, so a password change can be an event)."""
    return [f.name for f in model._meta.concrete_fields]


def m2m_field_choices(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.many_to_many]


def user_field_choices(model: type[models.Model]) -> list[str]:
    user_model = global_apps.get_model(settings.AUTH_USER_MODEL)
    return [
        f.name
        for f in model._meta.concrete_fields
        if f.is_relation and f.related_model is user_model
    ] + (["pk"] if model is user_model else [])


def validate_binding(binding: Any) -> None:
    """Raise ``ValidationError`` (by field) for a binding that cannot be run."""
    errors: dict[str, list[str]] = {}

    def error(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    event_type = (binding.event_type or "").strip()
    if not EVENT_TYPE.match(event_type) or len(event_type) > 200:
        error(
            "event_type",
            f"'{event_type}' is not an event type: lowercase words separated by dots, "
            "e.g. order.shipped",
        )
    model = binding.content_type.model_class() if binding.content_type_id else None
    if model is None:
        error("content_type", "choose a model that exists")
        raise ValidationError(errors)
    if not is_bindable(model):
        error("content_type", f"{model._meta.label_lower} cannot be bound")
    payload_fields = binding.payload_fields or []
    if not isinstance(payload_fields, list) or not all(isinstance(f, str) for f in payload_fields):
        error("payload_fields", "a list of field names")
        payload_fields = []
    allowed = set(payload_field_choices(model))
    known = set(tracked_field_choices(model))
    for name in payload_fields:
        if is_sensitive(name):
            error(
                "payload_fields",
                f"'{name}' holds a secret (password, token, key, hash...) and can never go "
                "into a payload",
            )
        elif name not in allowed:
            error("payload_fields", f"{model._meta.label_lower} has no field '{name}'")
    changed = binding.changed_fields or []
    if not isinstance(changed, list) or not all(isinstance(f, str) for f in changed):
        error("changed_fields", "a list of field names")
        changed = []
    if changed and binding.signal == binding.Signal.UPDATED:
        for name in changed:
            if name not in known:
                error("changed_fields", f"{model._meta.label_lower} has no field '{name}'")
    elif changed and binding.signal == binding.Signal.M2M_CHANGED:
        relations = set(m2m_field_choices(model))
        for name in changed:
            if name not in relations:
                error(
                    "changed_fields",
                    f"{model._meta.label_lower} has no many-to-many field '{name}'",
                )
    elif changed:
        error("changed_fields", "only 'updated' and 'many-to-many changed' bindings filter fields")
    if binding.signal == binding.Signal.M2M_CHANGED and not m2m_field_choices(model):
        error("signal", f"{model._meta.label_lower} has no many-to-many fields")
    if binding.actor_field and binding.actor_field not in user_field_choices(model):
        error(
            "actor_field",
            f"'{binding.actor_field}' is not a field of {model._meta.label_lower} pointing at "
            "a user",
        )
    if errors:
        raise ValidationError(errors)


# -- the compiled index ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledBinding:
    id: int
    model: str  # "app_label.model"
    signal: str
    event_type: str
    payload_fields: tuple[str, ...]  # field names, secrets removed
    changed_fields: frozenset[str] = frozenset()
    actor_field: str = ""


@dataclass(slots=True)
class BindingIndex:
    by_model: dict[tuple[str, str], list[CompiledBinding]] = field(default_factory=dict)

    def get(self, label: str, signal: str) -> list[CompiledBinding]:
        return self.by_model.get((label, signal), [])

    def tracks_updates(self, label: str) -> bool:
        return (label, "updated") in self.by_model


def build_binding_index(rows: Iterable[dict[str, Any]]) -> BindingIndex:
    """Rows (dicts with ``model`` as "app_label.model") in, index out; pure."""
    index = BindingIndex()
    for row in rows:
        binding = CompiledBinding(
            id=row["id"],
            model=row["model"],
            signal=row["signal"],
            event_type=row["event_type"],
            payload_fields=tuple(
                f
                for f in row.get("payload_fields") or ()
                if isinstance(f, str) and not is_sensitive(f)
            ),
            changed_fields=frozenset(row.get("changed_fields") or ()),
            actor_field=row.get("actor_field") or "",
        )
        index.by_model.setdefault((binding.model, binding.signal), []).append(binding)
    return index


class BindingIndexCache:
    """One binding index per process, rebuilt when the ``bindings`` revision moves."""

    def __init__(self, check_interval: float = 1.0):
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._index: BindingIndex | None = None
        self._revision: int | None = None
        self._checked_at = 0.0

    def get(self) -> BindingIndex:
        interval = getattr(settings, "NOTIFY", {}).get("CONFIG_CHECK_INTERVAL", self.check_interval)
        if self._index is not None and time.monotonic() - self._checked_at < interval:
            return self._index
        from .models import ConfigRevision, SignalBinding

        with self._lock:
            revision = ConfigRevision.current("bindings")
            self._checked_at = time.monotonic()
            if self._index is None or revision != self._revision:
                rows = [
                    {
                        **row,
                        "model": f"{row.pop('content_type__app_label')}.{row.pop('content_type__model')}",
                    }
                    for row in SignalBinding.objects.filter(is_active=True).values(
                        "id",
                        "signal",
                        "event_type",
                        "payload_fields",
                        "changed_fields",
                        "actor_field",
                        "content_type__app_label",
                        "content_type__model",
                    )
                ]
                self._index = build_binding_index(rows)
                self._revision = revision
            return self._index

    def clear(self) -> None:
        with self._lock:
            self._index = None
            self._revision = None


binding_index = BindingIndexCache()


# -- events ----------------------------------------------------------------------------------


def actor_of(instance: models.Model, binding: CompiledBinding) -> Any:
    if not binding.actor_field:
        return None
    if binding.actor_field == "pk":
        return instance.pk
    try:
        f = type(instance)._meta.get_field(binding.actor_field)
    except FieldDoesNotExist:
        return None
    return getattr(instance, f.attname, None)


def _bound(sender: Any, signal: str) -> list[CompiledBinding]:
    meta = getattr(sender, "_meta", None)
    # Historical models (migrations) are not the app's models: never bound.
    if meta is None or meta.apps is not global_apps or not is_bindable(sender):
        return []
    try:
        return binding_index.get().get(meta.label_lower, signal)
    except Exception:  # the bindings table does not exist yet (before migrate)
        log.debug("binding index unavailable", exc_info=True)
        return []


def binding_event(
    binding: CompiledBinding, instance: models.Model, payload: dict[str, Any]
) -> ModelEvent:
    return ModelEvent(
        event_type=binding.event_type,
        payload=payload,
        object_ref=object_ref(instance),
        actor=actor_of(instance, binding),
        origin=(
            f"signal binding {binding.id} ({binding.model} {binding.signal} -> "
            f"{binding.event_type})"
        ),
    )


class BindingEvents(ModelEventSource):
    """The active bindings, as a source of ``rules.model_events``."""

    def wants(self, sender: type[models.Model], kind: str) -> bool:
        return bool(_bound(sender, kind))

    def events(
        self, sender: type[models.Model], instance: models.Model, kind: str, change: Change | None
    ) -> list[ModelEvent]:
        out = []
        for binding in _bound(sender, kind):
            if change is not None and binding.changed_fields and change.changed is not None:
                if not binding.changed_fields.intersection(change.changed):
                    continue
            payload = change_payload(instance, binding.payload_fields, change)
            out.append(binding_event(binding, instance, payload))
        return out

    def store(self, event: ModelEvent) -> None:
        path = getattr(settings, "NOTIFY", {}).get("BINDING_TRIGGER", DEFAULT_TRIGGER)
        import_string(path)(
            event.event_type,
            event.payload,
            actor=event.actor,
            source="signal",
            object_ref=event.object_ref,
        )


binding_events = BindingEvents()
receivers = ModelEventReceivers(binding_events, "rules.bindings")


def _m2m_field(model: type[models.Model], through: Any) -> models.Field | None:
    for f in model._meta.many_to_many:
        if f.remote_field.through is through:
            return f
    return None


M2M_ACTIONS = {"post_add": "add", "post_remove": "remove", "post_clear": "clear"}


def on_m2m_changed(
    sender: Any,
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set[Any] | None,
    **kw: Any,
) -> None:
    if action == "pre_clear" and not reverse:
        if _bound(type(instance), "m2m_changed"):
            f = _m2m_field(type(instance), sender)
            if f is not None:
                ids = list(getattr(instance, f.name).values_list("pk", flat=True))
                setattr(instance, _CLEARED, ids)
        return
    if action not in M2M_ACTIONS:
        return
    if not reverse:
        owner_model, owners, related = type(instance), [instance], pk_set
        if action == "post_clear":
            related = instance.__dict__.pop(_CLEARED, None)
    else:
        if action == "post_clear" or not pk_set:
            return
        owner_model, owners, related = model, None, {instance.pk}
    bindings = _bound(owner_model, "m2m_changed")
    if not bindings:
        return
    f = _m2m_field(owner_model, sender)
    if f is None:
        return
    if owners is None:
        owners = list(owner_model._base_manager.filter(pk__in=pk_set).order_by("pk"))
    events = []
    for binding in bindings:
        if binding.changed_fields and f.name not in binding.changed_fields:
            continue
        for owner in owners:
            payload = change_payload(owner, binding.payload_fields)
            payload["m2m"] = {
                "field": f.name,
                "action": M2M_ACTIONS[action],
                "pks": sorted(json_value(list(related or ())), key=str),
            }
            events.append(binding_event(binding, owner, payload))
    store_events(binding_events, events)


def connect_receivers() -> None:
    """Connect the generic receivers, once per process (``RulesConfig.ready``).

    Saves and m2m changes are received for every model. Delete receivers are
    connected per bindable model: a delete receiver for every model would
    stop Django from deleting anything fast (cascades would load each row)."""
    receivers.connect(save_senders=[None], delete_senders=bindable_models())
    m2m_changed.connect(on_m2m_changed, dispatch_uid="rules.bindings.m2m_changed")
