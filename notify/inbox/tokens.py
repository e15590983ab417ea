"""Signed per-user tokens for the bell on another origin.

A page the host application serves on another origin cannot send the session
cookie to this service, so the host application renders a token into it
(``issue_token(user)``, or ``{% notify_bell_token %}`` / ``{% notify_bell %}``)
and ``<notify-inbox>`` sends it as ``Authorization: Bearer <token>`` (and as
``?token=`` on the live stream, which ``EventSource`` opens without headers).

A token names one user, is signed with ``SECRET_KEY`` (salted, so no other
signed value of the project is a token), and expires after
``NOTIFY["BELL_TOKEN_MAX_AGE"]`` seconds; it stops working as soon as the user
is deactivated or deleted. It only reaches that user's own feed.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core import signing

from notify import conf

SALT = "notify.inbox.bell-token"


class BadToken(Exception):
    """The token is not one of ours, has expired, or its user cannot sign in."""


def issue_token(user) -> str:
    """A token for ``user`` (a user object or a user id)."""
    user_id = getattr(user, "pk", user)
    return signing.TimestampSigner(salt=SALT).sign(str(int(user_id)))


def user_for_token(token: str) -> int:
    """The id of the active user ``token`` names; raises ``BadToken`` saying why."""
    max_age = conf.get("BELL_TOKEN_MAX_AGE")
    try:
        value = signing.TimestampSigner(salt=SALT).unsign(token, max_age=max_age)
    except signing.SignatureExpired:
        raise BadToken(f"the token has expired (tokens live {max_age:g} s)") from None
    except signing.BadSignature:
        raise BadToken("the token is not valid") from None
    user_id = int(value)
    if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
        raise BadToken("the token's user cannot sign in") from None
    return user_id
