"""One-click unsubscribe links: signed tokens scoped to (user, category, channel).

Every non-critical email carries ``List-Unsubscribe: <{SITE_URL}/unsubscribe/<token>/>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058). The token
is made with ``django.core.signing`` under a salt of its own, so a value signed
for anything else (a session, a password reset, another feature's links) never
passes here. It holds the user id, the category key and the channel alias —
never an address — and a timestamp: a link older than ``MAX_AGE`` is refused
and the page points to the settings page instead.

Signed is not encrypted: anyone holding the link can read the ids in it, which
is why no address goes in, and can use it, which is the point of one-click.

``SITE_URL`` decides the scheme. The embedded default is plain http on
127.0.0.1; production must set ``NOTIFY_SITE_URL`` to an https URL (RFC 8058
requires https for one-click, and Gmail and Yahoo ignore http links).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.core import signing

from notify import conf
from notify.models import Category, ChannelPreference

SALT = "notify.preferences.one_click.v1"
MAX_AGE = timedelta(days=60)
ONE_CLICK = "List-Unsubscribe=One-Click"
DAMAGED = (
    "The link may have been cut short or changed. Copy the whole link from the "
    "message, or use your notification settings instead."
)


class InvalidToken(Exception):
    """The token is not ours, was changed, names nothing, or is too old."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # "invalid" or "expired"
        self.message = message


@dataclass(frozen=True, slots=True)
class UnsubscribeScope:
    """What one link turns off: one category on one channel for one user."""

    user_id: int
    category: str  # Category.key
    channel: str  # channel alias, e.g. "email"


def make_token(scope: UnsubscribeScope) -> str:
    """Not compressed: zlib saves nothing on a payload this small (and cost a
    ``compress`` call per link); ``read_token`` takes compressed ones too."""
    payload = {"u": scope.user_id, "c": scope.category, "ch": scope.channel}
    return signing.dumps(payload, salt=SALT)


def read_token(token: str, max_age: timedelta = MAX_AGE) -> UnsubscribeScope:
    """The scope a token grants; raises ``InvalidToken``."""
    try:
        data = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise InvalidToken(
            "expired",
            f"Unsubscribe links work for {max_age.days} days. "
            "A newer message from us carries a fresh one.",
        ) from exc
    except signing.BadSignature as exc:
        raise InvalidToken("invalid", DAMAGED) from exc
    if not (
        isinstance(data, dict)
        and isinstance(data.get("u"), int)
        and isinstance(data.get("c"), str)
        and isinstance(data.get("ch"), str)
    ):  # signed by us under this salt but not in this shape: refuse all the same
        raise InvalidToken("invalid", DAMAGED)
    return UnsubscribeScope(user_id=data["u"], category=data["c"], channel=data["ch"])


def unsubscribe_url(scope: UnsubscribeScope) -> str:
    """The absolute link for emails and the ``List-Unsubscribe`` header."""
    site = conf.get("SITE_URL").rstrip("/")
    return f"{site}/unsubscribe/{make_token(scope)}/"


def email_headers(url: str) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers for a message with an unsubscribe link:
    ``<https://…>`` first (one-click), then ``<mailto:…>`` when
    ``UNSUBSCRIBE_MAILTO`` is set, its subject carrying the link's token. The
    email channel writes them as they are here, never as encoded words
    (``channels.email.ListHeader``)."""
    items = [f"<{url}>"]
    mailto = conf.get("UNSUBSCRIBE_MAILTO")
    if mailto:
        token = url.rstrip("/").rpartition("/")[2]
        items.append(f"<mailto:{quote(mailto, safe='@')}?subject=unsubscribe-{quote(token)}>")
    return {"List-Unsubscribe": ", ".join(items), "List-Unsubscribe-Post": ONE_CLICK}


def resolve(scope: UnsubscribeScope) -> Category:
    """The category a valid token names; ``InvalidToken`` when the user or the
    category is gone, or the category became critical (cannot be turned off)."""
    category = Category.objects.filter(key=scope.category).first()
    user_exists = get_user_model().objects.filter(pk=scope.user_id).exists()
    if category is None or not user_exists:
        raise InvalidToken(
            "invalid", "It no longer matches an account or a kind of notification we send."
        )
    if category.critical:
        raise InvalidToken(
            "critical",
            f"{category.name} notifications cannot be turned off: "
            f"{category.critical_reason or 'they are about your account.'}",
        )
    return category


def is_unsubscribed(scope: UnsubscribeScope, category: Category) -> bool:
    """Whether the link's (category, channel) cell is off already."""
    return ChannelPreference.objects.filter(
        user_id=scope.user_id, category=category, channel=scope.channel, enabled=False
    ).exists()


def resubscribe(scope: UnsubscribeScope, category: Category) -> None:
    """Turn the (category, channel) cell back on; idempotent."""
    ChannelPreference.objects.update_or_create(
        user_id=scope.user_id,
        category=category,
        channel=scope.channel,
        defaults={"enabled": True},
    )


def unsubscribe(scope: UnsubscribeScope, category: Category) -> None:
    """Turn the (category, channel) cell off; idempotent."""
    ChannelPreference.objects.update_or_create(
        user_id=scope.user_id,
        category=category,
        channel=scope.channel,
        defaults={"enabled": False},
    )
