"""Signed JSON webhooks: POST each message to the receiver URL a contact point holds.

The body is JSON (the schema: ``docs/webhook-payload.schema.json``)::

    {"id": <delivery id>, "channel": "webhook",
     "event": {"id": 9, "type": "shop.order.deleted",
               "occurred_at": "2026-01-01T12:00:00.123456+00:00", "actor_id": 3},
     "data": {<the event payload as stored>},
     "subject": "...", "text": "...", "url": "...", "sent_at": "2026-01-01T12:00:01+00:00"}

``event`` and ``data`` come from the message's ``extra`` (``null`` and ``{}``
for a message about no single event, such as a digest); ``subject`` and
``text`` are the rendered template, empty for a data-only rule. Three headers:

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

Options: ``SECRET`` (required), ``INTERNAL_HOSTS`` and the HTTP options of
:mod:`channels.http` (``TIMEOUT``, ``ALLOW_HTTP``, ``ALLOWED_HOSTS``). By
default a URL must be ``https`` to a host that resolves to public addresses
only. ``INTERNAL_HOSTS`` (env ``NOTIFY_WEBHOOK_INTERNAL_HOSTS``) names hosts
(exactly: names or IP literals, no subdomains) that may also be reached over
``http`` and at private or loopback addresses, e.g. ``["billing.internal",
"127.0.0.1"]``. Link-local and cloud metadata addresses are refused whatever
the options say (:func:`forbidden_address`, :data:`METADATA_HOSTS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .base import ChannelConfigurationError, InvalidRecipient, OutgoingMessage, TransientError
from .http import HTTP_OPTIONS, HttpWebhookChannel, UrlPolicy, host_allowed, redact, refused

SIGNATURE_VERSION = "v1"
INTERNAL_HOSTS_ENV = "NOTIFY_WEBHOOK_INTERNAL_HOSTS"

# Cloud metadata services: never a webhook receiver, whatever the options say.
# Besides these, every link-local address (169.254.0.0/16, fe80::/10: AWS, GCP,
# Azure, OpenStack, ECS task metadata) is refused.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def forbidden_address(address: Address) -> bool:
    """True for an address no webhook may reach: link-local, unspecified,
    multicast or a cloud metadata service (also as an IPv4-mapped IPv6)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address in METADATA_ADDRESSES
    )


def forbidden_host(host: str) -> bool:
    """True for a metadata host name or a forbidden address literal."""
    host = host.lower().strip().strip("[]").rstrip(".")
    if host in METADATA_HOSTS:
        return True
    try:
        return forbidden_address(ipaddress.ip_address(host))
    except ValueError:
        return False


def resolve(host: str, port: int) -> set[Address] | None:
    """Every address ``host`` resolves to; ``None`` when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    return {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos} or None


def normalise_hosts(hosts: str | Iterable[str] | None) -> tuple[str, ...]:
    if hosts is None:
        return ()
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    return tuple(h.lower().strip().strip("[]").rstrip(".") for h in hosts if h.strip())


@dataclasses.dataclass(frozen=True, slots=True)
class SignedWebhookUrlPolicy(UrlPolicy):
    """:class:`channels.http.UrlPolicy` plus named internal hosts, and never a
    link-local or metadata address (the module docstring says which)."""

    internal_hosts: tuple[str, ...] = ()
    alias: str = "webhook"

    @property
    def internal_hosts_setting(self) -> str:
        return f"NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']['INTERNAL_HOSTS'] (env {INTERNAL_HOSTS_ENV})"

    def check(self, url: str, provider: str) -> str:
        """Return ``url`` stripped, or raise ``InvalidRecipient`` saying why not
        (``TransientError`` when a named host does not resolve now)."""
        url = url.strip()
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise refused(url, f"not a URL: {exc}", provider) from exc
        host = (parts.hostname or "").lower().rstrip(".")
        if host and forbidden_host(host):
            raise self.forbidden(url, host, provider)
        internal = host in self.internal_hosts
        schemes = ("https", "http") if self.allow_http or internal else ("https",)
        if parts.scheme not in schemes or not host:
            hint = f"; http only to the hosts named in {INTERNAL_HOSTS_ENV}"
            reason = f"the URL must be {' or '.join(schemes)}://host/..."
            raise refused(url, reason + (hint if parts.scheme == "http" else ""), provider)
        if parts.username or parts.password:
            raise refused(url, "credentials in the URL are not accepted", provider)
        if not internal and self.allowed_hosts is not None:
            if not host_allowed(host, self.allowed_hosts):
                allowed = ", ".join(self.allowed_hosts)
                raise refused(url, f"host {host} is not one of {allowed}", provider)
        addresses = resolve(host, port)
        if addresses is None:
            if internal or self.allowed_hosts is not None:
                # A named host that does not resolve now may later (DNS, a restart).
                raise TransientError(f"cannot resolve {redact(url)}", code="dns", provider=provider)
            raise refused(url, f"host {host} is not a public address", provider)
        if any(forbidden_address(a) for a in addresses):
            raise self.forbidden(url, host, provider)
        if not internal and self.allowed_hosts is None:
            if not all(a.is_global for a in addresses):
                raise refused(
                    url,
                    f"host {host} is not a public address (an internal receiver must be "
                    f"named in {INTERNAL_HOSTS_ENV})",
                    provider,
                )
        return url

    def forbidden(self, url: str, host: str, provider: str) -> InvalidRecipient:
        return refused(
            url,
            f"host {host} is a link-local or cloud metadata address, never allowed, "
            f"not even by {INTERNAL_HOSTS_ENV}",
            provider,
        )

    def check_configuration(self) -> None:
        """Raise ``ChannelConfigurationError`` for internal hosts that can never work."""
        for host in self.internal_hosts:
            if "/" in host or (":" in host and not _is_ip(host)):
                raise ChannelConfigurationError(
                    f"{self.internal_hosts_setting}: '{host}' is not a host name; list "
                    "names or IP addresses, comma-separated, without scheme, port or path."
                )
            if forbidden_host(host):
                raise ChannelConfigurationError(
                    f"{self.internal_hosts_setting} names {host}: link-local and cloud "
                    "metadata addresses are never allowed as webhook receivers."
                )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SignedWebhookChannel(HttpWebhookChannel):
    """JSON to the receiver's URL, signed with HMAC-SHA256."""

    address_kind = "webhook"
    # Its own format: the chat part is optional, so a rule can be data-only.
    message_format = "webhook"
    provider_name = "webhook"
    accepted_options = HTTP_OPTIONS | {"SECRET", "INTERNAL_HOSTS"}
    # Only 410 Gone marks the address itself as dead; a 404 is a permanent error
    # like any other 4xx.
    invalid_recipient_statuses = frozenset({410})

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.secret: str = options.get("SECRET") or ""
        self.url_policy = SignedWebhookUrlPolicy(
            allow_http=self.url_policy.allow_http,
            allowed_hosts=self.url_policy.allowed_hosts,
            internal_hosts=normalise_hosts(options.get("INTERNAL_HOSTS")),
            alias=alias,
        )

    def open(self) -> None:
        self.check_configuration()
        super().open()

    def check_configuration(self) -> None:
        self._require_secret()
        self.url_policy.check_configuration()

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
            "event": message.extra.get("event"),
            "data": message.extra.get("data") or {},
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
