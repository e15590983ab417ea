"""The audit log: every change to rules, signal bindings, categories and
message templates, with who made it, when, and the item before and after.

Recorded by model signals (``connect``, from ``RulesConfig.ready``), so a
change is on the record whichever way it is made — admin forms, admin
actions, ``notify import``, a restore, code — in the change's own
transaction. Who: admin views run inside ``acting(request.user)``
(``AuditedAdminMixin``); the import and restore set their own source; a
change from code is recorded with no user and source ``code``. A save that
changes nothing is not recorded. ``QuerySet.update()`` sends no signal: code
that bulk-updates audited rows records them with ``record`` (the rule admin's
activate and deactivate actions do).

``before`` and ``after`` are items in the export format
(``rules.portability.serialize``), so ``restore`` puts an earlier version back
through the same validation as an import.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.http import HttpRequest

from .models import AuditEntry
from .portability import KINDS, kind_of, restore_item, serialize

AUDITED_MODELS = tuple(kind.model_label for kind in KINDS.values())
_BEFORE = "_rules_audit_before"

_acting: contextvars.ContextVar[tuple[Any, str, str] | None] = contextvars.ContextVar(
    "rules_audit_acting", default=None
)


@contextlib.contextmanager
def acting(user: Any, source: str = "admin", note: str = "") -> Iterator[None]:
    """Changes made inside are recorded as made by ``user`` (from ``source``)."""
    token = _acting.set((user, source, note))
    try:
        yield
    finally:
        _acting.reset(token)


def _who() -> tuple[Any, str, str, str]:
    """(user or None, name, source, note) of the change being made now."""
    current = _acting.get()
    if current is None:
        return None, "", "code", ""
    user, source, note = current
    if user is None or not getattr(user, "is_authenticated", False):
        return None, "", source, note
    return user, user.get_username(), source, note


def record(
    obj: models.Model,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    what: str = "",
) -> AuditEntry | None:
    """Write one entry for ``obj`` (an audited model instance); ``what`` says
    which part changed (a workflow step), in the entry's note."""
    kind = kind_of(obj)
    if kind is None:
        return None
    user, name, source, note = _who()
    note = "; ".join(part for part in (what, note) if part)
    return AuditEntry.objects.create(
        actor=user,
        actor_name=name,
        kind=kind.audit_kind,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        action=action,
        source=source,
        before=before,
        after=after,
        note=note[:200],
    )


# -- signal receivers ----------------------------------------------------------------------


def _stored(instance: models.Model) -> models.Model | None:
    if instance._state.adding or instance.pk is None:
        return None
    return type(instance)._base_manager.filter(pk=instance.pk).first()


def before_save(sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    stored = _stored(instance)
    setattr(instance, _BEFORE, serialize(stored) if stored is not None else None)


def after_save(
    sender: Any, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    if raw:
        return
    after = serialize(instance)
    if created or before is None:
        record(instance, AuditEntry.Action.CREATED, None, after)
    elif before != after:
        record(instance, AuditEntry.Action.CHANGED, before, after)


def before_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    setattr(instance, _BEFORE, serialize(instance))


def after_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    before = instance.__dict__.pop(_BEFORE, None) or serialize(instance)
    record(instance, AuditEntry.Action.DELETED, before, None)


# A workflow step is part of its rule: a step added, changed or deleted is an
# entry of the rule ("changed"), with the rule item (steps included) before
# and after, and the note naming the step; a restore puts the steps back too.


def _rule_of(step: Any) -> models.Model | None:
    from .models import Rule

    return Rule._base_manager.filter(pk=step.rule_id).first()


def step_before(sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    rule = _rule_of(instance)
    setattr(instance, _BEFORE, serialize(rule) if rule is not None else None)


def _step_what(step: Any, verb: str) -> str:
    return f"workflow step {step.position + 1} ({step.kind}) {verb}"


def step_after_save(
    sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    rule = None if raw or before is None else _rule_of(instance)
    if rule is None:
        return
    after = serialize(rule)
    if after != before:
        what = _step_what(instance, "added" if created else "changed")
        record(rule, AuditEntry.Action.CHANGED, before, after, what)


def step_after_delete(sender: Any, instance: Any, origin: Any = None, **kwargs: Any) -> None:
    before = instance.__dict__.pop(_BEFORE, None)
    origin_model = getattr(origin, "model", type(origin))
    if before is None or getattr(origin_model, "_meta", None) is None:
        return
    if origin_model._meta.label_lower == "rules.rule":  # the rule's own deletion says it
        return
    rule = _rule_of(instance)
    if rule is not None:
        record(
            rule,
            AuditEntry.Action.CHANGED,
            before,
            serialize(rule),
            _step_what(instance, "deleted"),
        )


def connect() -> None:
    step = apps.get_model("rules.WorkflowStep")
    uid = "rules.audit:rules.workflowstep"
    pre_save.connect(step_before, sender=step, dispatch_uid=uid + ":pre_save")
    post_save.connect(step_after_save, sender=step, dispatch_uid=uid + ":post_save")
    pre_delete.connect(step_before, sender=step, dispatch_uid=uid + ":pre_delete")
    post_delete.connect(step_after_delete, sender=step, dispatch_uid=uid + ":post_delete")
    for label in AUDITED_MODELS:
        model = apps.get_model(label)
        uid = f"rules.audit:{label}"
        pre_save.connect(before_save, sender=model, dispatch_uid=uid + ":pre_save")
        post_save.connect(after_save, sender=model, dispatch_uid=uid + ":post_save")
        pre_delete.connect(before_delete, sender=model, dispatch_uid=uid + ":pre_delete")
        post_delete.connect(after_delete, sender=model, dispatch_uid=uid + ":post_delete")


# -- restore ---------------------------------------------------------------------------------


def version_of(entry: AuditEntry) -> dict[str, Any] | None:
    """What a restore puts back: the item right after the change, or for a
    deletion, as it was before it."""
    return entry.before if entry.action == AuditEntry.Action.DELETED else entry.after


def restore(entry: AuditEntry, user: Any = None) -> tuple[models.Model | None, list[str]]:
    """Put the entry's version back (over the row if it still exists, else as a
    new one), validated like an import; (object, problems)."""
    kind = next((k for k in KINDS.values() if k.audit_kind == entry.kind), None)
    item = version_of(entry)
    if kind is None or not isinstance(item, dict):
        return None, [f"audit entry #{entry.pk} holds no version to restore"]
    instance = kind.model._base_manager.filter(pk=entry.object_id).first()
    return restore_item(kind, item, instance, f"restored from audit entry #{entry.pk}", user)


class AuditedAdminMixin:
    """Admin views run as the signed-in user, so the audit log says who."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        with acting(request.user, "admin"):
            return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc]

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        with acting(request.user, "admin"):
            return super().delete_view(request, *args, **kwargs)  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # Actions (and list_editable saves) run inside the changelist view.
        with acting(request.user, "admin"):
            return super().changelist_view(request, *args, **kwargs)  # type: ignore[misc]
