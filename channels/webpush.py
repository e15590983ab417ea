"""Web Push (RFC 8030) with VAPID (RFC 8292) and an encrypted payload (RFC 8291).

The contact point (kind ``webpush``) is the browser's ``PushSubscription`` as
JSON: ``{"endpoint": "https://…", "keys": {"p256dh": "…", "auth": "…"}}``.
The payload — ``{"title", "body", "url", "badge", "delivery_id"}`` as JSON,
which the service worker (``notify/static/notify/push-sw.js``) shows — is
encrypted for the subscription's keys (``aes128gcm``, by ``pywebpush``) and
posted to the endpoint with a VAPID ``Authorization: vapid t=<JWT>, k=<key>``.

The endpoint comes from a browser, so it is untrusted: by default it must be
``https`` on a known push service's host (Google, Mozilla, Microsoft, Apple).

Options:

``VAPID_PRIVATE_KEY`` or ``VAPID_PRIVATE_KEY_FILE``
    The application server's P-256 key: PEM, DER in base64, or the raw 32-byte
    key in base64url (``vapid --gen`` writes a PEM). Its public half is what
    pages pass to ``pushManager.subscribe`` (:func:`vapid_public_key`).
``VAPID_SUBJECT``
    ``mailto:`` or ``https:`` contact of the sender, e.g. ``mailto:ops@example.com``.
``TTL`` (seconds a push service keeps the message, default 86400),
``URGENCY`` (``very-low``, ``low``, ``normal``, ``high``; default ``normal``),
``TIMEOUT``, ``ALLOW_HTTP``, ``ALLOWED_HOSTS`` (as in :mod:`channels.http`).

Errors: 404 and 410 from the push service → the subscription is gone and
pruned; 429 and 5xx → retried after ``Retry-After``; 401/403 (VAPID refused)
→ configuration error; 400 and 413 → permanent.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02, b64urlencode
from pywebpush import WebPusher, WebPushException

from .base import OutgoingMessage, SendResult, TransientError
from .http import HTTP_OPTIONS, UrlPolicy
from .push import PUSH_OPTIONS, PushChannel, PushContent, read_secret, record

PUSH_SERVICE_HOSTS = (
    "fcm.googleapis.com",
    "jmt17.google.com",  # Chromium 156 subscribes at https://jmt17.google.com/fcm/send/…
    "android.googleapis.com",
    "push.services.mozilla.com",
    "notify.windows.com",
    "push.apple.com",
)
URGENCIES = ("very-low", "low", "normal", "high")
VAPID_LIFETIME = 12 * 3600


def load_vapid(key: str) -> Vapid02:
    """A VAPID signer from a PEM, base64 DER or base64url raw private key."""
    if "-----BEGIN" in key:
        return Vapid02.from_pem(key.encode())
    return Vapid02.from_string(key)


def vapid_public_key(private_key: str) -> str:
    """The ``applicationServerKey`` for ``pushManager.subscribe``: the public
    key, uncompressed point, base64url without padding."""
    raw = load_vapid(private_key).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64urlencode(raw)


def parse_subscription(address: str) -> dict[str, Any] | None:
    """The subscription an address holds, or None when it is not one."""
    try:
        data = json.loads(address)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("endpoint"), str):
        return None
    keys = data.get("keys")
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(k), str) and keys.get(k) for k in ("p256dh", "auth")
    ):
        return None
    return {"endpoint": data["endpoint"], "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


class WebPushChannel(PushChannel):
    """Sends the ``push`` part to a browser's push subscription."""

    provider_name = "webpush"
    address_kind = "webpush"
    accepted_options = (
        (PUSH_OPTIONS - {"BASE_URL"})
        | HTTP_OPTIONS
        | {
            "VAPID_PRIVATE_KEY",
            "VAPID_PRIVATE_KEY_FILE",
            "VAPID_SUBJECT",
            "TTL",
            "URGENCY",
        }
    )

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.private_key = read_secret(options, "VAPID_PRIVATE_KEY")
        self.subject = options.get("VAPID_SUBJECT") or ""
        self.ttl = int(options.get("TTL", 86400))
        self.urgency = options.get("URGENCY") or "normal"
        self.url_policy = UrlPolicy.from_options(options, PUSH_SERVICE_HOSTS)
        self.session: requests.Session | None = None
        self._vapid: Vapid02 | None = None

    def check_configuration(self) -> None:
        if not self.private_key:
            raise self.misconfigured("set VAPID_PRIVATE_KEY (or VAPID_PRIVATE_KEY_FILE)")
        try:
            self._vapid = load_vapid(self.private_key)
        except Exception as exc:  # py_vapid raises several kinds for a bad key
            raise self.misconfigured(
                f"VAPID_PRIVATE_KEY is not a P-256 private key: {exc}"
            ) from exc
        if not self.subject.startswith(("mailto:", "https://")):
            raise self.misconfigured("set VAPID_SUBJECT to a mailto: or https: contact")
        if self.urgency not in URGENCIES:
            raise self.misconfigured(f"URGENCY must be one of {', '.join(URGENCIES)}")

    def open(self) -> None:
        if self.session is None:
            self.check_configuration()
            self.session = requests.Session()

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()

    def vapid_headers(self, endpoint: str) -> dict[str, str]:
        assert self._vapid is not None
        parts = urlsplit(endpoint)
        claims = {
            "sub": self.subject,
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + VAPID_LIFETIME,
        }
        return self._vapid.sign(claims)

    def payload(self, message: OutgoingMessage) -> bytes:
        content = PushContent.of(message)
        data: dict[str, Any] = {
            "title": content.title,
            "body": content.body,
            "delivery_id": message.delivery_id,
        }
        if content.url:
            data["url"] = content.url
        if content.badge is not None:
            data["badge"] = content.badge
        return json.dumps(data, ensure_ascii=False).encode()

    def send(self, message: OutgoingMessage) -> SendResult:
        subscription = parse_subscription(message.to)
        if subscription is None:
            raise self.gone("not a Web Push subscription (JSON)", "bad_subscription", None)
        endpoint = self.url_policy.check(subscription["endpoint"], self.provider_name)
        if self.session is None:
            self.open()
        headers = {**self.vapid_headers(endpoint), "Urgency": self.urgency}
        try:
            pusher = WebPusher(subscription, requests_session=self.session)
            response = pusher.send(
                self.payload(message),
                headers=headers,
                ttl=self.ttl,
                content_encoding="aes128gcm",
                timeout=self.timeout,
            )
        except WebPushException as exc:  # the subscription's keys are unusable
            raise self.gone(f"the subscription cannot be used: {exc}", "bad_keys", None) from exc
        except requests.RequestException as exc:
            raise TransientError(
                f"push service unreachable: {type(exc).__name__}: {exc}",
                code="network",
                provider=self.provider_name,
            ) from exc
        assert isinstance(response, requests.Response)
        status = response.status_code
        if status in (200, 201, 202):
            return SendResult(
                provider=self.provider_name,
                message_id=response.headers.get("Location", "")
                or f"{status}:{message.delivery_id}",
                response={"status": status, "location": response.headers.get("Location", "")},
            )
        detail = f"the push service answered HTTP {status}: {response.text[:300]}"
        if status in (404, 410):
            raise self.gone(f"the subscription is gone ({detail})", str(status), record(response))
        if status == 429 or status >= 500:
            raise self.transient(detail, str(status), response)
        if status in (401, 403):
            raise self.misconfigured(f"{detail} (VAPID refused)")
        raise self.permanent(detail, str(status), record(response))
