"""Is a reminder still wanted? A rule's ``cancel_condition`` is evaluated just
before rendering, against the event's payload refreshed with the current row
of the object it is about (``object_ref``). A deleted object cancels.

The current row goes where events from model changes keep it: under
``payload.object`` (every field but secrets, by field name, over what the
event stored there; see ``rules.model_events``), so ``not
payload.object.is_active`` means the same to the rule's condition and to the
cancel condition, for ``emit_on``, signal bindings and ``trigger(...,
object_ref=...)`` alike. The payload's other keys are as stored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from django.apps import apps
from django.core.exceptions import ValidationError

from notify.fanout.payload import current_object
from notify.models import Event
from notify.models.status import Status
from rules.conditions import CompiledCondition, ConditionError, compile_condition

# Skip reason of a delivery cancelled because its object is gone.
OBJECT_DELETED = "object deleted"


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
        """The object's current row (``payload.object`` keys); ``None`` if it no longer exists.
        Raises ``LookupError`` or ``ValueError`` for a reference that cannot be read."""
        if object_ref not in self._objects:
            label, _, pk = object_ref.rpartition(":")
            app_label, _, model_name = label.partition(".")
            model = apps.get_model(app_label, model_name)  # LookupError
            try:
                instance = model._base_manager.filter(pk=pk).first()
            except (ValueError, TypeError, ValidationError) as exc:
                raise ValueError(f"bad primary key in {object_ref!r}: {exc}") from exc
            self._objects[object_ref] = None if instance is None else current_object(instance)
        return self._objects[object_ref]

    def verdict(self, source: str, event: Event, context: dict[str, Any]) -> Verdict | None:
        """``None`` to go on sending; otherwise what the delivery becomes.

        ``context`` is the event's condition context (payload, event, actor);
        its ``payload.object`` is refreshed with the object's current row."""
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
            stored = payload.get("object") if isinstance(payload.get("object"), dict) else {}
            payload = {**payload, "object": {**stored, **current}}
        try:
            condition = compiled_cancel_condition(source)
            holds = condition is not None and condition.evaluate({**context, "payload": payload})
        except ConditionError as exc:
            return Verdict(Status.FAILED, "cancel_condition", f"cancel condition: {exc}")
        if not holds:
            return None
        reason = f"cancel condition true: {source}"
        return Verdict(Status.CANCELLED, reason[:50], reason)
