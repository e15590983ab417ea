"""The shared base of channels that POST JSON to a URL the contact point holds.

Teams, Discord and signed webhooks differ only in the payload, a few headers
and how they say "no"; the rest is here, as a fixed sequence of small steps
(like django-anymail's backends): check the URL, build the payload, post it
through one pooled ``requests.Session`` per batch, classify the answer.

The URL comes from a user's contact point, so it is untrusted: by default it
must be ``https``, redirects are never followed, and its host must be on the
channel's allow-list (Discord, Teams) or, for channels that may post anywhere
(signed webhooks), resolve to public addresses only. Options, all optional:

``TIMEOUT`` (seconds, default 10)
    Connect and read time-out of each request.
``ALLOW_HTTP`` (default ``False``)
    Accept ``http://`` URLs. For tests and local development only.
``ALLOWED_HOSTS`` (default: the channel's provider hosts, or ``None``)
    Host names the URL may point at; ``"example.com"`` also allows its
    subdomains. ``None`` allows any host that resolves to public addresses
    only. Tests set ``["127.0.0.1"]``.
``FAILURE_RATE`` (default 0.7), ``MINIMUM_CALLS`` (default 20; formerly ``FAILURE_THRESHOLD``), ``WINDOW`` (seconds, default 60), ``COOL_DOWN`` (seconds, default 60), ``CACHE``
    The circuit breaker of each host (:mod:`channels.breaker`): when that
    share of the window's calls failed (no connection, time-out, 5xx), over
    at least ``MINIMUM_CALLS`` calls, or ``MINIMUM_CALLS`` failed in a row,
    requests to the host stop for the cool-down, then one trial request decides. Deliveries to a
    host whose breaker is open are rescheduled to the end of the cool-down
    without a request and without counting an attempt.

A 429 raises :class:`channels.base.ProviderRateLimited` with the
``Retry-After``: the receiver is alive (the breaker does not count it) and the
outbox does not count it as an attempt, up to ``NOTIFY["MAX_FREE_RATE_LIMITS"]``
in a row.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from .base import (
    Channel,
    ChannelError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    ProviderRateLimited,
    SendResult,
    TransientError,
)
from .breaker import BREAKER_OPTIONS, CircuitBreaker

USER_AGENT = "notify-webhooks/1"
# The options above, read by every channel whose URLs come from contact points.
HTTP_OPTIONS = frozenset({"TIMEOUT", "ALLOW_HTTP", "ALLOWED_HOSTS"})


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().strip().lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def resolves_to_public(host: str, port: int) -> bool:
    """True when every address ``host`` resolves to is a global unicast address.

    This keeps a user's webhook from reaching the service's own network
    (metadata endpoints, databases on 10.x). The check and the connection
    resolve separately, so it is a guard, not a firewall: deployments that
    care also restrict egress."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_global for a in addresses)


def parse_retry_after(value: Any) -> float | None:
    """Seconds from a ``Retry-After`` (delta-seconds form) or a JSON number."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which user-supplied URLs a channel may post to (see the module docstring)."""

    allow_http: bool = False
    allowed_hosts: tuple[str, ...] | None = None

    @classmethod
    def from_options(
        cls, options: dict[str, Any], default_hosts: tuple[str, ...] | None
    ) -> UrlPolicy:
        hosts = options.get("ALLOWED_HOSTS", default_hosts)
        if isinstance(hosts, str):
            hosts = [hosts]
        return cls(
            allow_http=bool(options.get("ALLOW_HTTP", False)),
            allowed_hosts=None if hosts is None else tuple(hosts),
        )

    def check(self, url: str, provider: str) -> str:
        """Return ``url`` stripped, or raise ``InvalidRecipient`` saying why not."""
        url = url.strip()
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise refused(url, f"not a URL: {exc}", provider) from exc
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            raise refused(url, f"the URL must be {' or '.join(schemes)}://host/...", provider)
        if parts.username or parts.password:
            raise refused(url, "credentials in the URL are not accepted", provider)
        if self.allowed_hosts is not None:
            if not host_allowed(parts.hostname, self.allowed_hosts):
                allowed = ", ".join(self.allowed_hosts)
                raise refused(url, f"host {parts.hostname} is not one of {allowed}", provider)
        elif not resolves_to_public(parts.hostname, port):
            raise refused(url, f"host {parts.hostname} is not a public address", provider)
        return url


def refused(url: str, reason: str, provider: str) -> InvalidRecipient:
    return InvalidRecipient(
        f"webhook URL refused: {reason} ({redact(url)})", code="url_refused", provider=provider
    )


# Requests in flight per batch by default (notify.delivery.inflight).
HTTP_CONCURRENCY = 32


class HttpWebhookChannel(Channel):
    """POST a JSON payload to ``message.to``; subclasses shape it and read the answer."""

    message_format = "chat"
    accepted_options = HTTP_OPTIONS | BREAKER_OPTIONS
    # Hosts a URL may point at when the ALLOWED_HOSTS option is not given;
    # None: any public host.
    default_allowed_hosts: ClassVar[tuple[str, ...] | None] = None
    # HTTP statuses that mean "this webhook does not exist (any more)".
    invalid_recipient_statuses: ClassVar[frozenset[int]] = frozenset({404, 410})
    # Statuses worth trying again, besides every 5xx.
    transient_statuses: ClassVar[frozenset[int]] = frozenset({408, 425, 429})

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.timeout = float(options.get("TIMEOUT", 10))
        self.url_policy = UrlPolicy.from_options(options, self.default_allowed_hosts)
        self.session: requests.Session | None = None
        self.breakers: dict[str, CircuitBreaker] = {}
        # Checked now, so bad breaker options fail at start-up.
        self.breaker_for("")

    def breaker_for(self, url: str) -> CircuitBreaker:
        """The circuit breaker of ``url``'s host (and port): shared by every
        worker through the cache, whichever contact point names the host."""
        host = urlsplit(url).netloc.rpartition("@")[2].lower()
        breaker = self.breakers.get(host)
        if breaker is None:
            where = f"channel '{self.alias}'"
            breaker = CircuitBreaker.from_options(f"{self.alias}:{host}", self.options, where)
            self.breakers[host] = breaker
        return breaker

    # -- the batch ---------------------------------------------------------------------

    def default_concurrency(self) -> int:
        """Requests in flight per batch (each instance its own pooled session)."""
        return HTTP_CONCURRENCY

    def open(self) -> None:
        if self.session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = False  # no proxy or netrc from the environment for user URLs
            self.session = session

    def close(self) -> None:
        if self.session is not None:
            try:
                self.session.close()
            except Exception:  # noqa: S110 - closing must not hide the outcome
                pass
            self.session = None

    # -- one send, step by step ------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        url = self.target_url(message)
        body = json.dumps(self.build_payload(message), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Notify-Delivery": message.delivery_ref,
            **self.build_headers(message, body),
        }
        if self.session is None:
            self.open()
        return self.breaker_for(url).call(
            lambda: self.post(url, body, headers, message), self.provider_name
        )

    def post(
        self, url: str, body: bytes, headers: dict[str, str], message: OutgoingMessage
    ) -> SendResult:
        """One request and its answer, classified (behind the host's breaker)."""
        assert self.session is not None
        try:
            response = self.session.post(
                url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout as exc:
            # The receiver may have acted on it: it dedupes by X-Notify-Delivery.
            raise TransientError(
                f"no answer from {redact(url)} within {self.timeout:g}s",
                code="timeout",
                provider=self.provider_name,
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(
                f"cannot reach {redact(url)}: {without_path(str(exc), url)}",
                code="connection",
                provider=self.provider_name,
            ) from exc
        status = self.status_of(response)
        if not 200 <= status < 300:
            raise self.error_for(response, status)
        return SendResult(
            provider=self.provider_name,
            message_id=self.message_id(response, message),
            response=self.response_record(response),
        )

    def target_url(self, message: OutgoingMessage) -> str:
        """The contact point's URL, if this channel may post to it."""
        return self.url_policy.check(message.to, self.provider_name)

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        raise NotImplementedError

    def build_headers(self, message: OutgoingMessage, body: bytes) -> dict[str, str]:
        return {}

    def message_id(self, response: requests.Response, message: OutgoingMessage) -> str:
        """Incoming webhooks return no id: the delivery id (``X-Notify-Delivery``)
        is what the receiver knows the message by."""
        return message.delivery_ref

    def response_record(self, response: requests.Response) -> dict[str, Any]:
        return {"status": response.status_code, "body": response.text[:500]}

    def status_of(self, response: requests.Response) -> int:
        """The answer's real status (some providers wrap errors in a 200)."""
        return response.status_code

    def error_code(self, response: requests.Response, status: int) -> str:
        """The provider's own error code in the answer, if any; else the status."""
        return str(status)

    def retry_after(self, response: requests.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"))

    def error_for(self, response: requests.Response, status: int) -> ChannelError:
        """Classify a non-2xx answer."""
        code = self.error_code(response, status)
        detail = f"HTTP {status}: {response.text[:300].strip()}"
        record = self.response_record(response)
        if status == 429:
            return ProviderRateLimited(
                detail,
                code=code,
                provider=self.provider_name,
                response=record,
                retry_after=self.retry_after(response),
            )
        if status in self.transient_statuses or status >= 500:
            return TransientError(
                detail,
                code=code,
                provider=self.provider_name,
                response=record,
                retry_after=self.retry_after(response),
            )
        if status in self.invalid_recipient_statuses:
            return InvalidRecipient(
                f"the webhook is gone ({detail})",
                code=code,
                provider=self.provider_name,
                response=record,
            )
        if 300 <= status < 400:
            return PermanentError(
                f"redirects are not followed ({detail}, to {redact(response.headers.get('Location', ''))})",
                code=code,
                provider=self.provider_name,
                response=record,
            )
        return PermanentError(detail, code=code, provider=self.provider_name, response=record)


def without_path(text: str, url: str) -> str:
    """``text`` (an exception message) without the URL's path, which holds secrets."""
    path = urlsplit(url).path
    return text.replace(path, "/…") if len(path) > 1 else text


def redact(url: str) -> str:
    """A webhook URL without its path and query, where the secrets live."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…" if parts.netloc else "?"
    except ValueError:
        return "?"
