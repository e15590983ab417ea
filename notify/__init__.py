"""notify: multi-channel notification delivery for Django, with a rules engine.

``notify.trigger("order.shipped", payload={...}, actor=user, recipients=[...])``
stores an event; rules decide who hears about it and how.

Each function imports its implementation when called: Django imports this
package (an installed app) before the models exist, and the implementations
need them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db import models

    from notify.intake.scheduled import Cancellation
    from notify.models import Event


def trigger(event_type: str, payload: dict[str, Any] | None = None, **kwargs: Any) -> Event:
    """Store an event and schedule its fan-out; see ``notify.intake.trigger.trigger``."""
    from notify.intake.trigger import trigger as _trigger  # needs the models: app loading

    return _trigger(event_type, payload, **kwargs)


def emit_on(model: type[models.Model], **kwargs: Any) -> Callable[[], None]:
    """Turn a model's post_save / post_delete into events; returns a disconnect
    function; see ``notify.intake.model_signals.emit_on``."""
    from notify.intake.model_signals import emit_on as _emit_on  # needs the models: app loading

    return _emit_on(model, **kwargs)


def schedule(
    event_type: str, payload: dict[str, Any] | None = None, *, at: datetime, **kwargs: Any
) -> Event:
    """Store an event to be fanned out at ``at``; see ``notify.intake.scheduled.schedule``."""
    from notify.intake.scheduled import schedule as _schedule  # needs the models: app loading

    return _schedule(event_type, payload, at=at, **kwargs)


def cancel(idempotency_key: str, scope: str = "") -> Cancellation:
    """Cancel a scheduled event, or what is still pending of a sent one, by
    idempotency key; see ``notify.intake.scheduled.cancel``."""
    from notify.intake.scheduled import cancel as _cancel  # needs the models: app loading

    return _cancel(idempotency_key, scope)


def subscribe(user: Any, thing: Any) -> bool:
    """Make ``user`` follow a model instance or a topic name (rules reach them
    with ``followers`` and ``topic:<name>``); see ``notify.preferences.subscriptions``."""
    from notify.preferences.subscriptions import subscribe as _subscribe  # app loading

    return _subscribe(user, thing)


def unsubscribe(user: Any, thing: Any) -> bool:
    """Stop ``user`` following a model instance or a topic; see ``notify.preferences.subscriptions``."""
    from notify.preferences.subscriptions import unsubscribe as _unsubscribe  # app loading

    return _unsubscribe(user, thing)


__all__ = ["cancel", "emit_on", "schedule", "subscribe", "trigger", "unsubscribe"]
