"""notify: multi-channel notification delivery for Django, with a rules engine.

``notify.trigger("order.shipped", payload={...}, actor=user, recipients=[...])``
stores an event; rules decide who hears about it and how.
"""

from typing import Any


def trigger(event_type: str, payload: dict[str, Any] | None = None, **kwargs: Any):
    """Store an event and schedule its fan-out; see ``notify.events.trigger``."""
    from .events import trigger as _trigger

    return _trigger(event_type, payload, **kwargs)


def emit_on(model, **kwargs: Any):
    """Turn a model's post_save / post_delete into events; see ``notify.events.emit_on``."""
    from .events import emit_on as _emit_on

    return _emit_on(model, **kwargs)


__all__ = ["emit_on", "trigger"]
