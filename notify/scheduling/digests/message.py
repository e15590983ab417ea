"""Digests: what one says. Each item is rendered to a title as the user would
see it in the inbox, the items are grouped by category (``notify.scheduling.digests.periods``),
and the digest template (``templates/digest/``: email, SMS and chat parts)
renders them with the usual context names: the digest is ``payload``.
"""

from __future__ import annotations

from channels.base import OutgoingMessage
from notify import conf
from notify.delivery.message import recipient_context, render_context
from notify.delivery.rendering import template_store
from notify.models import Delivery, Digest
from notify.preferences.one_click import UnsubscribeScope, unsubscribe_url
from notify.scheduling.digests.periods import DigestItem, digest_payload

DIGEST_MESSAGE = "digest"  # templates/digest/


def item_title(item: Delivery, locale: str) -> str:
    """One line for an item: its inbox title if it has one, else its message's
    ``inapp`` part (first line) or email subject, rendered as for the user."""
    notification = item.notification
    if notification.title:
        return notification.title
    rule = notification.rule
    if rule is not None:
        context = render_context(item)
        for part in ("inapp", "email.subject"):
            try:
                template = template_store.get(rule.message, part, locale)
                if template is None:
                    continue
                text = template_store.env_for(part).render_bounded(template, context).strip()
            except Exception:  # noqa: S112 - untrusted template: try the next part
                continue
            if text:
                return " ".join(text.splitlines()[0].split())[:300]
    return f"{notification.category.name} notification"


def item_url(item: Delivery) -> str:
    """The item's own link (its inbox url, else the payload's ``url``), or ""."""
    notification = item.notification
    payload = notification.event.payload if isinstance(notification.event.payload, dict) else {}
    url = notification.url or payload.get("url")
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


def build_digest_message(
    digest: Digest, items: list[Delivery], address: str, message_format: str, locale: str
) -> OutgoingMessage:
    """Render the digest template for these items. Raises TemplateError."""
    site = conf.get("SITE_URL").rstrip("/")
    inbox_url = f"{site}/inbox/"
    rows = [
        DigestItem(
            category_key=i.notification.category.key,
            category_name=i.notification.category.name,
            title=item_title(i, locale),
            url=item_url(i),
            created_at=i.created_at,
        )
        for i in items
    ]
    payload = digest_payload(digest.frequency, digest.period, rows)
    for group in payload["groups"]:  # one-click links per category, as single emails have
        group["unsubscribe_url"] = (
            unsubscribe_url(UnsubscribeScope(digest.user_id, group["key"], digest.channel))
            if message_format == "email"
            else ""
        )
    context = {
        "payload": payload,
        "event": {"id": 0, "type": "digest", "source": "scheduler", "object": ""},
        "actor": None,
        "recipient": recipient_context(digest.user),
        "category": {"key": DIGEST_MESSAGE, "name": f"{digest.frequency.title()} digest"},
        "notification": {"id": 0},
        "site_url": site,
        "settings_url": f"{site}/settings/notifications/",
        "inbox_url": inbox_url,
        "unsubscribe_url": "",
    }
    parts = template_store.render(DIGEST_MESSAGE, message_format, context, locale)
    return OutgoingMessage(
        delivery_id=0,
        channel=digest.channel,
        to=address,
        subject=parts.subject,
        text=parts.text,
        html=parts.html,
        headers={"X-Notify-Digest": str(digest.pk)} if message_format == "email" else {},
        extra={"digest_id": digest.pk, "user_id": digest.user_id, "url": inbox_url},
        # Receivers drop duplicates by X-Notify-Delivery: every digest its own.
        reference=digest_reference(digest.pk),
    )


def digest_reference(digest_id: int) -> str:
    """A digest's ``X-Notify-Delivery`` value, never a delivery id's."""
    return f"digest-{digest_id}"
