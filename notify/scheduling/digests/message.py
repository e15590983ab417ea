"""Digests: what one says. Each item is rendered to a title as the user would
see it in the inbox, the items are grouped by category (``notify.scheduling.digests.periods``),
and the digest template (``templates/digest/``: email, SMS and chat parts)
renders them with the usual context names: the digest is ``payload``.
"""

from __future__ import annotations

from channels.base import OutgoingMessage
from notify import conf
from notify.delivery.message import recipient_context, render_context
from notify.delivery.rendering import context_names, template_store
from notify.models import Delivery, Digest
from notify.preferences.one_click import UnsubscribeScope, unsubscribe_url
from notify.scheduling.digests.periods import DigestItem, digest_payload

DIGEST_MESSAGE = "digest"  # templates/digest/


# Context names whose values differ per recipient of the same event: a title
# template that reads none of them says the same to every recipient.
PER_RECIPIENT = frozenset({"click_url", "recipient", "notification", "unsubscribe_url"})

# Titles already rendered in a batch, by (message, locale, event, category):
# only those of templates that read nothing of the recipient's.
TitleCache = dict[tuple[str, str, int, int], str]


def item_title(item: Delivery, locale: str, titles: TitleCache | None = None) -> str:
    """One line for an item: its inbox title if it has one, else its message's
    ``inapp`` part (first line) or email subject, rendered as for the user.

    With ``titles``, a title whose templates read nothing of the recipient's
    is rendered once per batch: the 2,000 recipients of an event share it."""
    notification = item.notification
    if notification.title:
        return notification.title
    rule = notification.rule
    if rule is not None:
        key = (rule.message, locale, notification.event_id, notification.category_id)
        if titles is not None and key in titles:
            return titles[key]
        context = None
        shared = True
        for part in ("inapp", "email.subject"):
            try:
                template = template_store.get(rule.message, part, locale)
                if template is None:
                    continue
                names = context_names(template)
                shared = shared and names is not None and not names & PER_RECIPIENT
                context = context if context is not None else render_context(item)
                text = template_store.env_for(part).render_bounded(template, context).strip()
            except Exception:  # noqa: S112 - untrusted template: try the next part
                continue
            if text:
                title = " ".join(text.splitlines()[0].split())[:300]
                if titles is not None and shared:
                    titles[key] = title
                return title
    return f"{notification.category.name} notification"


def item_url(item: Delivery) -> str:
    """The item's own link (its inbox url, else the payload's ``url``), or ""."""
    notification = item.notification
    payload = notification.event.payload if isinstance(notification.event.payload, dict) else {}
    url = notification.url or payload.get("url")
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


def build_digest_message(
    digest: Digest,
    items: list[Delivery],
    address: str,
    message_format: str,
    locale: str,
    titles: TitleCache | None = None,
) -> OutgoingMessage:
    """Render the digest template for these items (``titles``: see ``item_title``).
    Raises TemplateError."""
    site = conf.get("SITE_URL").rstrip("/")
    inbox_url = f"{site}/inbox/"
    rows = [
        DigestItem(
            category_key=i.notification.category.key,
            category_name=i.notification.category.name,
            title=item_title(i, locale, titles),
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
