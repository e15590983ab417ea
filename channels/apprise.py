"""Apprise: one channel for the many services Apprise speaks (ntfy, Telegram,
Matrix, Gotify, Pushover, Mattermost, JSON/form posts, …).

Address kind ``apprise``: the contact point holds an Apprise URL such as
``ntfys://ntfy.sh/my-topic`` or ``tgram://<bot token>/<chat id>``. The rendered
``chat`` text is sent as plain text, the subject (if any) as the title.

Apprise answers a send with a yes or a no and logs the why, so a failed send
is a ``TransientError`` carrying the logged reason (retried with backoff until
the delivery is dead), and a URL Apprise cannot parse is an
``InvalidRecipient``. Apprise's own retries are turned off.

A user chooses the URL, so: ``SCHEMES`` (a list of Apprise schemes, default
all) limits the services users may name, and the schemes that post to a host
the user picks (``json``, ``form``, ``xml`` and their ``s`` forms) go through
the same URL policy as the webhook channels (``ALLOW_HTTP``,
``ALLOWED_HOSTS``; by default https to public addresses only). Self-hosted
services under other schemes are best limited with ``SCHEMES``. ``TIMEOUT``
(seconds, default 10) bounds connecting and reading.

Needs the ``apprise`` package.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .base import (
    Channel,
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    SendResult,
    TransientError,
)
from .http import HTTP_OPTIONS, UrlPolicy

try:
    import apprise
except ImportError:  # pragma: no cover - an optional provider
    apprise = None

# Schemes whose host is wherever the user says: checked like a webhook URL.
USER_HOST_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})


class _ThreadLog(logging.Handler):
    """Collects the apprise logger's warnings raised by one thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def apprise_warnings() -> Iterator[list[str]]:
    handler = _ThreadLog()
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


class AppriseChannel(Channel):
    address_kind = "apprise"
    message_format = "chat"
    provider_name = "apprise"
    accepted_options = HTTP_OPTIONS | {"SCHEMES"}

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.timeout = float(options.get("TIMEOUT", 10))
        schemes = options.get("SCHEMES")
        self.schemes = None if schemes is None else frozenset(s.lower() for s in schemes)
        self.url_policy = UrlPolicy.from_options(options, None)

    def open(self) -> None:
        if apprise is None:
            raise ChannelConfigurationError(
                f"Apprise channel '{self.alias}' needs the apprise package: pip install apprise"
            )

    def send(self, message: OutgoingMessage) -> SendResult:
        self.open()
        plugin = self.service_for(message.to.strip(), message.delivery_ref)
        shown = plugin.url(privacy=True)
        with apprise_warnings() as warnings:
            ok = plugin.notify(
                body=message.text or message.subject,
                title=message.subject,
                body_format=apprise.NotifyFormat.TEXT,
            )
        if not ok:
            why = "; ".join(dict.fromkeys(warnings)) or "see the apprise log"
            raise TransientError(
                f"{plugin.service_name} did not take the message ({shown}): {why}",
                code="apprise_failed",
                provider=self.provider_name,
                response={"service": plugin.service_name, "log": warnings[-10:]},
            )
        return SendResult(
            provider=self.provider_name,
            message_id=message.delivery_ref,  # Apprise returns no id
            response={"service": plugin.service_name},
        )

    def service_for(self, url: str, delivery_ref: int | str) -> Any:
        """The Apprise plugin for ``url``, if users may send there."""
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if self.schemes is not None and scheme not in self.schemes:
            raise InvalidRecipient(
                f"Apprise scheme {scheme or '(none)'!r} is not allowed here "
                f"(allowed: {', '.join(sorted(self.schemes))})",
                code="scheme_refused",
                provider=self.provider_name,
            )
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            raise InvalidRecipient(
                f"not an Apprise URL Apprise can use (scheme {scheme or '(none)'!r})",
                code="invalid_url",
                provider=self.provider_name,
            )
        if scheme in USER_HOST_SCHEMES:
            target = f"{'https' if plugin.secure else 'http'}://{plugin.host}"
            if isinstance(plugin.port, int):
                target += f":{plugin.port}"
            self.url_policy.check(target + "/", self.provider_name)
            if isinstance(getattr(plugin, "headers", None), dict):
                # Like our webhooks: the receiver can drop a retried duplicate.
                plugin.headers["X-Notify-Delivery"] = str(delivery_ref)
        # Our backoff decides when to try again, not Apprise; and nothing hangs.
        plugin.service_retry = 0
        plugin.socket_connect_timeout = self.timeout
        plugin.socket_read_timeout = self.timeout
        return plugin
