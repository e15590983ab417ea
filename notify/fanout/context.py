"""What conditions, deduplication keys and templates see of an event: plain
dicts built from the stored row (``payload``, ``event``, ``actor``)."""

from __future__ import annotations

from typing import Any

from notify.models import Event


def actor_context(user: Any) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.pk,
        "username": user.get_username(),
        "name": user.get_full_name() or user.get_username(),
        "first_name": getattr(user, "first_name", ""),
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
    }


def event_context(event: Event) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.type,
        "source": event.source,
        "object": event.object_ref,
        "received_at": event.received_at.isoformat() if event.received_at else "",
    }


def condition_context(event: Event) -> dict[str, Any]:
    return {
        "payload": event.payload,
        "event": event_context(event),
        "actor": actor_context(event.actor),
    }
