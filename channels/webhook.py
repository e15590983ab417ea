"""Signed JSON webhooks: POST each message to the receiver URL a contact point holds.

The body is JSON::

    {"id": <delivery id>, "channel": "...", "subject": "...", "text": "...",
     "url": "...", "sent_at": "2026-01-01T12:00:00+00:00"}

with three headers:

``X-Notify-Timestamp``
    Unix seconds when it was signed.
``X-Notify-Signature``
    ``v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the shared secret>``;
    more than one ``v1=`` entry, comma-separated, may come (secret rotation).
``X-Notify-Delivery``
    The delivery id: the same on every retry, so the receiver can drop
    duplicates (delivery is at-least-once, for instance after a time-out).

A receiver checks them with :func:`verify_signature` (copy it, it is
standalone). Answers: 2xx sent; 410 Gone: the receiver is gone for good
(``InvalidRecipient``); other 4xx: ``PermanentError``; 408, 425, 429, 5xx, a
time-out or no connection: ``TransientError``, honouring ``Retry-After``.

Options: ``SECRET`` (required) and the HTTP options of
:mod:`channels.http` (``TIMEOUT``, ``ALLOW_HTTP``, ``ALLOWED_HOSTS``; by
default any public ``https`` host).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from .base import ChannelConfigurationError, OutgoingMessage
from .http import HTTP_OPTIONS, HttpWebhookChannel

SIGNATURE_VERSION = "v1"


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Notify-Signature`` value for ``body`` signed at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    signed = str(timestamp).encode() + b"." + body
    return f"{SIGNATURE_VERSION}={hmac.new(key, signed, hashlib.sha256).hexdigest()}"


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes | str,
    header: str,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """True when ``header`` (``X-Notify-Signature``) signs ``body`` at ``timestamp``
    (``X-Notify-Timestamp``) with ``secret``, and the timestamp is within
    ``tolerance`` seconds of ``now``. Compares in constant time; pass the raw
    body bytes as received, before any JSON parsing."""
    try:
        signed_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(key, str(signed_at).encode() + b"." + raw, hashlib.sha256).hexdigest()
    for entry in (header or "").split(","):
        version, _, value = entry.strip().partition("=")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return True
    return False


class SignedWebhookChannel(HttpWebhookChannel):
    """JSON to the receiver's URL, signed with HMAC-SHA256."""

    address_kind = "webhook"
    message_format = "chat"
    provider_name = "webhook"
    accepted_options = HTTP_OPTIONS | {"SECRET"}
    # Only 410 Gone marks the address itself as dead; a 404 is a permanent error
    # like any other 4xx.
    invalid_recipient_statuses = frozenset({410})

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.secret: str = options.get("SECRET") or ""

    def open(self) -> None:
        self._require_secret()
        super().open()

    def check_configuration(self) -> None:
        self._require_secret()

    def _require_secret(self) -> None:
        if not self.secret:
            raise ChannelConfigurationError(
                f"webhook channel '{self.alias}': set NOTIFY['CHANNELS']['{self.alias}']"
                "['OPTIONS']['SECRET'] (env NOTIFY_WEBHOOK_SECRET) to sign webhooks."
            )

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return {
            "id": message.delivery_id,
            "channel": message.channel,
            "subject": message.subject,
            "text": message.text,
            "url": message.extra.get("url") or "",
            "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def build_headers(self, message: OutgoingMessage, body: bytes) -> dict[str, str]:
        self._require_secret()
        timestamp = int(time.time())
        return {
            "X-Notify-Timestamp": str(timestamp),
            "X-Notify-Signature": sign(self.secret, timestamp, body),
        }
