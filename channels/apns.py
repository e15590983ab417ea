"""Apple Push Notification service: token-based auth over HTTP/2.

``POST {BASE_URL}/3/device/{device token}`` with ``authorization: bearer
<provider token>``, ``apns-topic`` (the app's bundle id) and
``apns-push-type``. The provider token is a JWT signed ES256 with the team's
``.p8`` key (``kid`` the key id, ``iss`` the team id), renewed every 50
minutes (Apple refuses tokens older than an hour and updates more often than
every 20 minutes). The contact point (kind ``apns``) is the hex device token.

Options:

``KEY`` or ``KEY_FILE``
    The ``.p8`` signing key (PEM text, or a path to it).
``KEY_ID``, ``TEAM_ID``
    The key's id and the developer team's id (10 characters each).
``TOPIC``
    The app's bundle id, e.g. ``com.example.app``.
``BASE_URL``
    Default ``https://api.push.apple.com``; ``https://api.sandbox.push.apple.com``
    for development builds; a local peer in tests (``http://`` means HTTP/2
    with prior knowledge).
``PUSH_TYPE`` (default ``alert``), ``PRIORITY`` (default 10), ``TIMEOUT``.

Errors (developer.apple.com, "Handling notification responses from APNs"):
410 ``Unregistered``, 400 ``BadDeviceToken`` and ``DeviceTokenNotForTopic``
→ the token is gone and pruned; 429 ``TooManyRequests`` and 500/503 → retried
after ``Retry-After``; 403 ``InvalidProviderToken``/``MissingProviderToken``,
400 ``BadTopic``/``TopicDisallowed`` → configuration error;
``ExpiredProviderToken`` renews the token and tries once more.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

import httpx
import jwt

from .base import OutgoingMessage, SendResult
from .push import PUSH_OPTIONS, PushChannel, PushContent, read_secret, record

TOKEN_LIFETIME = 50 * 60
DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")

GONE = "gone"
RETRY = "retry"
CONFIG = "config"
RENEW = "renew"


class ApnsChannel(PushChannel):
    """Sends the ``push`` part to an APNs device token."""

    provider_name = "apns"
    address_kind = "apns"
    default_base_url = "https://api.push.apple.com"
    http2 = True
    accepted_options = PUSH_OPTIONS | {
        "KEY",
        "KEY_FILE",
        "KEY_ID",
        "TEAM_ID",
        "TOPIC",
        "PUSH_TYPE",
        "PRIORITY",
    }
    ERRORS: ClassVar[dict[str, str]] = {
        "Unregistered": GONE,
        "BadDeviceToken": GONE,
        "DeviceTokenNotForTopic": GONE,
        "TooManyRequests": RETRY,
        "TooManyProviderTokenUpdates": RETRY,
        "InternalServerError": RETRY,
        "ServiceUnavailable": RETRY,
        "Shutdown": RETRY,
        "ExpiredProviderToken": RENEW,
        "InvalidProviderToken": CONFIG,
        "MissingProviderToken": CONFIG,
        "BadCertificate": CONFIG,
        "BadCertificateEnvironment": CONFIG,
        "Forbidden": CONFIG,
        "BadTopic": CONFIG,
        "MissingTopic": CONFIG,
        "TopicDisallowed": CONFIG,
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.key = read_secret(options, "KEY")
        self.key_id = options.get("KEY_ID") or ""
        self.team_id = options.get("TEAM_ID") or ""
        self.topic = options.get("TOPIC") or ""
        self.push_type = options.get("PUSH_TYPE") or "alert"
        self.priority = str(options.get("PRIORITY", 10))
        self._token = ""
        self._token_issued = 0.0

    def check_configuration(self) -> None:
        missing = [
            name
            for name, value in (
                ("KEY (or KEY_FILE)", self.key),
                ("KEY_ID", self.key_id),
                ("TEAM_ID", self.team_id),
                ("TOPIC", self.topic),
            )
            if not value
        ]
        if missing:
            raise self.misconfigured(f"set {', '.join(missing)}")

    def provider_token(self) -> str:
        now = time.time()
        if self._token and now - self._token_issued < TOKEN_LIFETIME:
            return self._token
        try:
            self._token = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise self.misconfigured(f"KEY cannot sign an ES256 token: {exc}") from exc
        self._token_issued = now
        return self._token

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        content = PushContent.of(message)
        aps: dict[str, Any] = {"alert": {"title": content.title, "body": content.body}}
        if content.badge is not None:
            aps["badge"] = content.badge
        body: dict[str, Any] = {"aps": aps, "delivery_id": message.delivery_id}
        if content.url:
            body["url"] = content.url
        return body

    def send(self, message: OutgoingMessage) -> SendResult:
        token = message.to.strip()
        if not DEVICE_TOKEN.match(token):
            raise self.gone(f"not an APNs device token: {message.to!r}", "BadDeviceToken", None)
        body = self.payload(message)
        response = None
        for _ in range(2):  # an expired provider token once: renew it
            response = self.request(
                "POST",
                f"{self.base_url}/3/device/{token}",
                json=body,
                headers={
                    "authorization": f"bearer {self.provider_token()}",
                    "apns-topic": self.topic,
                    "apns-push-type": self.push_type,
                    "apns-priority": self.priority,
                },
            )
            if reason_of(response) != "ExpiredProviderToken":
                break
            self._token = ""
        assert response is not None
        if response.status_code == 200:
            return SendResult(
                provider=self.provider_name,
                message_id=response.headers.get("apns-id", ""),
                response={"status": 200, "apns-id": response.headers.get("apns-id", "")},
            )
        raise self.error_for(response)

    def error_for(self, response: httpx.Response) -> Exception:
        status, reason = response.status_code, reason_of(response)
        kind = self.ERRORS.get(reason)
        if kind is None:
            if status == 410:
                kind = GONE
            elif status == 429 or status >= 500:
                kind = RETRY
            elif status == 403:
                kind = CONFIG
        detail = f"APNs answered HTTP {status} {reason or '(no reason)'}"
        if kind == GONE:
            return self.gone(f"the device token is gone ({detail})", reason, record(response))
        if kind == RETRY:
            return self.transient(detail, reason or str(status), response)
        if kind in (CONFIG, RENEW):
            return self.misconfigured(detail)
        return self.permanent(detail, reason or str(status), record(response))


def reason_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason") or "")
    except (ValueError, AttributeError):
        return ""
