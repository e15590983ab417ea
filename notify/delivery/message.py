"""What a single delivery says: its template rendered with the event, the
actor, the recipient and the links of the recipient's locale and channel.

Used at send time by the worker (``notify.delivery.send``), for dry runs
(``notify.delivery.dry_run``), by the admin preview and by digests, which
render each item's title with the same context (``render_context``).

Besides the rendered text, the message carries the event as data in its
``extra`` (``event``: id, type, occurred_at, actor_id; ``data``: the payload as
stored, after event middleware and a binding's allow-list): signed webhooks
send both, so a receiver can sync from data instead of parsing text.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from jinja2.exceptions import TemplateError

from channels.base import OutgoingMessage
from notify import conf
from notify.delivery.batch import batch_context, single_batch
from notify.delivery.rendering import template_store
from notify.fanout.context import actor_context, event_context
from notify.models import Delivery, Event, Notification, WorkflowRun
from notify.outbox.engagement import click_url
from notify.preferences.one_click import UnsubscribeScope, email_headers, unsubscribe_url


def recipient_context(user: Any) -> dict[str, Any]:
    return {
        "id": user.pk,
        "username": user.get_username(),
        "first_name": getattr(user, "first_name", ""),
        "last_name": getattr(user, "last_name", ""),
        "name": user.get_full_name() or user.get_username(),
    }


def render_context(delivery: Delivery, unsubscribe: str = "") -> dict[str, Any]:
    notification = delivery.notification
    event = notification.event
    site = conf.get("SITE_URL").rstrip("/")
    actor = actor_context(event.actor)
    target = event.payload.get("url") if isinstance(event.payload, dict) else None
    target = target if isinstance(target, str) and target else f"{site}/inbox/"
    return {
        # The event's link (else the inbox) through the signed click redirect:
        # a click is recorded and marks the notification read everywhere.
        "click_url": click_url(notification.pk, target) if notification.pk else target,
        # One event is a batch of one (a batched workflow's message replaces it).
        "batch": single_batch(event.payload, actor, event.pk),
        "payload": event.payload,
        "event": event_context(event),
        "actor": actor,
        "recipient": recipient_context(notification.user),
        "category": {"key": notification.category.key, "name": notification.category.name},
        "notification": {"id": notification.pk},
        "site_url": site,
        "settings_url": f"{site}/settings/notifications/",
        "inbox_url": f"{site}/inbox/",
        "unsubscribe_url": unsubscribe,
    }


def event_data(event: Event) -> dict[str, Any]:
    """The event as a message's ``extra`` carries it (see the module docstring).

    ``occurred_at`` is when the event was stored (for a model change: in the
    change's transaction), in UTC with microseconds, so receivers can order by
    it, then by ``id``."""
    received = event.received_at
    return {
        "event": {
            "id": event.pk,
            "type": event.type,
            "occurred_at": received.astimezone(UTC).isoformat(timespec="microseconds")
            if received
            else None,
            # A custom user model's key may be a UUID: JSON gets its string.
            "actor_id": event.actor_id
            if event.actor_id is None or isinstance(event.actor_id, int)
            else str(event.actor_id),
        },
        "data": event.payload if isinstance(event.payload, dict) else {},
    }


def unsubscribe_link(delivery: Delivery, message_format: str) -> str:
    """The signed one-click link for an email of a non-critical category ("" otherwise)."""
    notification = delivery.notification
    if message_format != "email" or notification.category.critical:
        return ""
    return unsubscribe_url(
        UnsubscribeScope(notification.user_id, notification.category.key, delivery.channel)
    )


def build_message(
    delivery: Delivery, message_format: str, address: str, locale: str
) -> OutgoingMessage:
    """Render one delivery into what its channel sends. Raises TemplateError."""
    notification = delivery.notification
    rule = notification.rule
    if rule is None:
        raise TemplateError("the rule that made this notification was deleted")
    unsubscribe = unsubscribe_link(delivery, message_format)
    context = render_context(delivery, unsubscribe)
    if delivery.template:  # a workflow's channel step: its template, and its batch if any
        context["batch"] = workflow_batch(notification.pk) or context["batch"]
    parts = template_store.render(
        delivery.template or rule.message, message_format, context, locale
    )
    event = event_data(notification.event)
    url = event["data"].get("url")
    extra: dict[str, Any] = {
        "notification_id": notification.pk,
        "user_id": notification.user_id,
        "url": url if isinstance(url, str) else "",
        **event,
    }
    if message_format == "push":  # the deep link (the inbox when the event has none), the badge
        extra["url"] = extra["url"] or context["inbox_url"]
        extra["badge"] = unread_inbox_count(notification.user_id)
    return OutgoingMessage(
        delivery_id=delivery.pk,
        channel=delivery.channel,
        to=address,
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
        headers=email_headers(unsubscribe) if unsubscribe else {},
        extra=extra,
    )


def workflow_batch(notification_id: int) -> dict[str, Any] | None:
    """The ``batch`` of the workflow run that made this notification (one event
    and no others when it was not batched)."""
    run_ids = list(
        WorkflowRun.objects.filter(notification_id=notification_id)
        .exclude(batch_key="")
        .values_list("pk", flat=True)[:1]
    )
    return batch_context(run_ids).get(run_ids[0]) if run_ids else None


def unread_inbox_count(user_id: int) -> int:
    """A push's badge: the recipient's unread inbox items (the query of
    ``notify.inbox.store.unread_count``, which sits above this layer)."""
    return Notification.objects.filter(
        user_id=user_id, inbox_at__isnull=False, read_at__isnull=True
    ).count()
