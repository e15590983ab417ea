"""Engagement: what a recipient did with a notification, in any channel.

Recorded on the notification (``seen_at``, ``opened_at``, ``clicked_at``,
``read_at``), first time only, so a workflow step's condition
(``notify.workflows.engine``: ``seen``, ``read``, ``clicked``, ``opened``) sees
the same thing whichever channel it came through:

* seen: the in-app item was shown (inbox page or API listing);
* read: marked read in the inbox, or a link clicked;
* opened: an ESP's open tracking (anymail ``opened``);
* clicked: an ESP's click tracking (anymail ``clicked``), or our own signed
  click redirect (``click_url``): a click marks the notification read everywhere.

Delivered comes from the deliveries themselves (provider status reports).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

from django.core import signing
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from notify import conf
from notify.models import Notification

OPENED, CLICKED = "opened", "clicked"
CLICK_SALT = "notify.click"


def mark_seen(notification_ids: Iterable[int], at: datetime | None = None) -> int:
    """The in-app items were shown (first time only). Returns how many changed."""
    ids = list(notification_ids)
    if not ids:
        return 0
    return Notification.objects.filter(pk__in=ids, seen_at__isnull=True).update(
        seen_at=at or timezone.now()
    )


def record(notification_ids: Iterable[int], kind: str, at: datetime | None = None) -> int:
    """An open or a click reported for these notifications. A click also makes
    them seen and read (everywhere: the inbox shows them read)."""
    ids = list(notification_ids)
    if not ids:
        return 0
    at = at or timezone.now()
    rows = Notification.objects.filter(pk__in=ids)
    if kind == OPENED:
        return rows.filter(opened_at__isnull=True).update(opened_at=at)
    if kind == CLICKED:
        return rows.filter(
            Q(clicked_at__isnull=True) | Q(read_at__isnull=True) | Q(seen_at__isnull=True)
        ).update(
            clicked_at=Coalesce("clicked_at", at),
            read_at=Coalesce("read_at", at),
            seen_at=Coalesce("seen_at", at),
        )
    raise ValueError(f"unknown engagement {kind!r}; expected {OPENED!r} or {CLICKED!r}")


def click_token(notification_id: int, url: str) -> str:
    return signing.dumps({"n": notification_id, "u": url}, salt=CLICK_SALT, compress=True)


def click_url(notification_id: int, url: str) -> str:
    """The signed redirect that records a click, then goes to ``url``."""
    site = conf.get("SITE_URL").rstrip("/")
    return f"{site}/r/{click_token(notification_id, url)}"


class BadClickLink(ValueError):
    """A click link whose signature or target is not ours."""


def read_click_token(token: str) -> tuple[int, str]:
    """The notification id and target of a click link; ``BadClickLink`` if it
    was not signed by us or points anywhere but http(s)."""
    try:
        data = signing.loads(token, salt=CLICK_SALT)
    except signing.BadSignature as exc:
        raise BadClickLink("the link is not valid (bad signature)") from exc
    url = data.get("u") if isinstance(data, dict) else None
    pk = data.get("n") if isinstance(data, dict) else None
    if not isinstance(pk, int) or not isinstance(url, str):
        raise BadClickLink("the link is not valid")
    if urlsplit(url).scheme not in ("http", "https"):
        raise BadClickLink("the link's target is not an http(s) address")
    return pk, url
