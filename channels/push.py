"""What the push channels share: the notification they show, one pooled HTTP
client per batch, and the way a provider's answer becomes an error.

Three providers, one module each over this base:

* :mod:`channels.fcm` — Firebase Cloud Messaging, HTTP v1 (Android, iOS, web);
* :mod:`channels.apns` — Apple Push Notification service, token auth over HTTP/2;
* :mod:`channels.webpush` — Web Push with VAPID (RFC 8030, 8291, 8292).

The contact point is the device: an FCM registration token (kind ``fcm``), an
APNs device token (``apns``) or a browser's push subscription as JSON
(``webpush``). A user may have several; a push goes to each of them, one
``send`` per device (``notify.delivery.devices``).

The rendered ``push`` part of a template is the notification: its first line
the title (``message.subject``), the rest the body (``message.text``);
``extra["url"]`` is the deep link and ``extra["badge"]`` the badge count (the
recipient's unread inbox items).

When the provider says a token is gone for good (FCM ``UNREGISTERED``, APNs
410/``BadDeviceToken``, a push service's 404/410), the channel raises
:class:`InvalidRecipient` with ``gone=True`` and the pipeline deletes the
contact point. Quota and availability answers (429, 503) are
:class:`TransientError` with the provider's ``Retry-After``; refused
credentials are a :class:`ChannelConfigurationError`: an operator must act.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .base import (
    Channel,
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from .http import parse_retry_after

PUSH_OPTIONS = frozenset({"BASE_URL", "TIMEOUT"})
# Providers refuse payloads over 4 KB (APNs, FCM, Web Push): keep the text well inside.
TITLE_LIMIT = 200
BODY_LIMIT = 1000
USER_AGENT = "notify-push/1"


@dataclass(frozen=True, slots=True)
class PushContent:
    """What a push notification shows, whatever the provider."""

    title: str
    body: str
    url: str = ""
    badge: int | None = None

    @classmethod
    def of(cls, message: OutgoingMessage) -> PushContent:
        url = message.extra.get("url")
        badge = message.extra.get("badge")
        return cls(
            title=shorten(message.subject.strip(), TITLE_LIMIT),
            body=shorten(message.text.strip(), BODY_LIMIT),
            url=url if isinstance(url, str) else "",
            badge=badge if isinstance(badge, int) and not isinstance(badge, bool) else None,
        )


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def read_secret(options: dict[str, Any], name: str) -> str:
    """The option ``name`` (a PEM or JSON text) or the file ``<name>_FILE`` names."""
    value = options.get(name) or ""
    path = options.get(f"{name}_FILE") or ""
    if not value and path:
        try:
            value = Path(path).read_text()
        except OSError as exc:
            raise ChannelConfigurationError(f"cannot read {name}_FILE {path!r}: {exc}") from exc
    return value.strip() if isinstance(value, str) else value


class PushChannel(Channel):
    """One ``httpx.Client`` per batch; a subclass builds and reads the requests."""

    message_format = "push"
    accepted_options = PUSH_OPTIONS
    default_base_url = ""
    http2 = False  # True: HTTP/2 only (APNs), with prior knowledge on http:// URLs

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.base_url = (options.get("BASE_URL") or self.default_base_url).rstrip("/")
        self.timeout = float(options.get("TIMEOUT", 10))
        self.client: httpx.Client | None = None

    @property
    def where(self) -> str:
        return f"NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']"

    def open(self) -> None:
        if self.client is None:
            self.check_configuration()
            self.client = httpx.Client(
                http1=not self.http2,
                http2=self.http2,
                timeout=self.timeout,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing must not raise
                client.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request on the batch's client; a network failure is transient."""
        if self.client is None:
            self.open()
        assert self.client is not None
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise TransientError(
                f"{self.provider_name} unreachable: {type(exc).__name__}: {exc}",
                code="network",
                provider=self.provider_name,
            ) from exc

    # -- errors, as every push provider shares them ------------------------------------

    def gone(self, detail: str, code: str, response: Any) -> InvalidRecipient:
        """The device token is gone for good: the contact point is deleted."""
        return InvalidRecipient(
            detail, gone=True, code=code, provider=self.provider_name, response=response
        )

    def transient(self, detail: str, code: str, response: Any) -> TransientError:
        return TransientError(
            detail,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            code=code,
            provider=self.provider_name,
            response=record(response),
        )

    def permanent(self, detail: str, code: str, response: Any) -> PermanentError:
        return PermanentError(detail, code=code, provider=self.provider_name, response=response)

    def misconfigured(self, detail: str) -> ChannelConfigurationError:
        return ChannelConfigurationError(
            f"{self.provider_name} channel '{self.alias}': {detail}. Check {self.where}."
        )


def record(response: Any) -> dict[str, Any]:
    """A provider's answer (``httpx`` or ``requests``) as stored with the attempt."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    return {"status": response.status_code, "body": body}
