"""Firebase Cloud Messaging through the HTTP v1 API.

``POST {BASE_URL}/v1/projects/{project}/messages:send`` with an OAuth2 bearer
token. The token comes from the service account: a JWT assertion signed with
its private key (RS256) is exchanged at its ``token_uri`` (RFC 7523), and kept
until a minute before it expires. The contact point (kind ``fcm``) is the
device's registration token.

Options:

``CREDENTIALS`` or ``CREDENTIALS_FILE``
    The service-account key JSON (a dict, its text, or a path to it), as the
    Firebase console downloads it: ``project_id``, ``client_email``,
    ``private_key``, ``token_uri``.
``PROJECT_ID``
    The Firebase project (default: the credential's ``project_id``).
``BASE_URL``
    Default ``https://fcm.googleapis.com``; a local peer in tests.
``TOKEN_URI``
    Where the assertion is exchanged (default: the credential's ``token_uri``).
``TTL``
    Seconds a message may wait for an offline device (FCM's default: 4 weeks).
``TIMEOUT``
    Seconds per request (default 10).

Errors (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):
``UNREGISTERED`` (and a bare 404) → the token is gone and pruned;
``SENDER_ID_MISMATCH`` → the token belongs to another project: pruned too;
``INVALID_ARGUMENT`` → permanent; ``QUOTA_EXCEEDED`` (429), ``UNAVAILABLE``
(503) and ``INTERNAL`` (500) → retried after ``Retry-After``;
``THIRD_PARTY_AUTH_ERROR``, 401 and 403 → configuration error (one 401 first
fetches a new token and tries again).
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import httpx
import jwt

from .base import ChannelConfigurationError, ChannelError, OutgoingMessage, SendResult
from .push import PUSH_OPTIONS, PushChannel, PushContent, read_secret, record

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

GONE = "gone"
RETRY = "retry"
CONFIG = "config"
PERMANENT = "permanent"


class FcmChannel(PushChannel):
    """Sends the ``push`` part to an FCM registration token."""

    provider_name = "fcm"
    address_kind = "fcm"
    default_base_url = "https://fcm.googleapis.com"
    accepted_options = PUSH_OPTIONS | {
        "CREDENTIALS",
        "CREDENTIALS_FILE",
        "PROJECT_ID",
        "TOKEN_URI",
        "TTL",
    }
    # FCM's errorCode (or the status when there is none) -> what it means.
    ERRORS: ClassVar[dict[str, str]] = {
        "UNREGISTERED": GONE,
        "NOT_FOUND": GONE,
        "SENDER_ID_MISMATCH": GONE,
        "QUOTA_EXCEEDED": RETRY,
        "RESOURCE_EXHAUSTED": RETRY,
        "UNAVAILABLE": RETRY,
        "INTERNAL": RETRY,
        "THIRD_PARTY_AUTH_ERROR": CONFIG,
        "UNAUTHENTICATED": CONFIG,
        "PERMISSION_DENIED": CONFIG,
        "INVALID_ARGUMENT": PERMANENT,
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        raw = options.get("CREDENTIALS")
        if raw is None or isinstance(raw, str):
            raw = read_secret(options, "CREDENTIALS")
        self.credentials: Any = raw
        if isinstance(raw, str) and raw:
            try:
                self.credentials = json.loads(raw)
            except ValueError:
                self.credentials = None  # check_configuration says so
        creds = self.credentials if isinstance(self.credentials, dict) else {}
        self.project_id = options.get("PROJECT_ID") or creds.get("project_id") or ""
        self.token_uri = options.get("TOKEN_URI") or creds.get("token_uri") or GOOGLE_TOKEN_URI
        self.ttl = options.get("TTL")
        self._token = ""
        self._token_expires = 0.0

    def check_configuration(self) -> None:
        creds = self.credentials
        if not isinstance(creds, dict):
            raise self.misconfigured(
                "CREDENTIALS (or CREDENTIALS_FILE) must be the service account's key JSON"
            )
        missing = [k for k in ("client_email", "private_key") if not creds.get(k)]
        if missing:
            raise self.misconfigured(f"the service-account credential lacks {', '.join(missing)}")
        if not self.project_id:
            raise self.misconfigured("set PROJECT_ID (the credential has no project_id)")

    # -- OAuth2: the service account's assertion for a bearer token ------------------------

    def assertion(self, now: float) -> str:
        creds = self.credentials
        claims = {
            "iss": creds["client_email"],
            "sub": creds["client_email"],
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME,
        }
        headers = {"kid": creds["private_key_id"]} if creds.get("private_key_id") else None
        try:
            return jwt.encode(claims, creds["private_key"], algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise self.misconfigured(f"the credential's private_key cannot sign: {exc}") from exc

    def access_token(self) -> str:
        now = time.time()
        if self._token and now < self._token_expires - 60:
            return self._token
        response = self.request(
            "POST",
            self.token_uri,
            data={"grant_type": JWT_BEARER, "assertion": self.assertion(now)},
        )
        if response.status_code in (400, 401, 403):
            raise self.misconfigured(
                f"the token endpoint refused the service account (HTTP {response.status_code}: "
                f"{response.text[:300]})"
            )
        if response.status_code != 200:
            raise self.transient(
                f"the token endpoint answered HTTP {response.status_code}", "token", response
            )
        data = response.json()
        self._token = data["access_token"]
        self._token_expires = now + float(data.get("expires_in", 3600))
        return self._token

    # -- one send ---------------------------------------------------------------------

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        content = PushContent.of(message)
        data = {"delivery_id": str(message.delivery_id)}
        if content.url:
            data["url"] = content.url
        fcm: dict[str, Any] = {
            "token": message.to.strip(),
            "notification": {"title": content.title, "body": content.body},
            "data": data,
        }
        if content.badge is not None:
            fcm["apns"] = {"payload": {"aps": {"badge": content.badge}}}
            fcm["android"] = {"notification": {"notification_count": content.badge}}
        if content.url:
            fcm["webpush"] = {"fcm_options": {"link": content.url}}
        if self.ttl is not None:
            fcm.setdefault("android", {})["ttl"] = f"{int(self.ttl)}s"
        return {"message": fcm}

    def send(self, message: OutgoingMessage) -> SendResult:
        if not message.to.strip():
            raise self.gone("no FCM registration token", "no_token", None)
        url = f"{self.base_url}/v1/projects/{self.project_id}/messages:send"
        body = self.payload(message)
        response = None
        for _ in range(2):  # a 401 once: the token may have been revoked early
            token = self.access_token()
            response = self.request(
                "POST", url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code != 401:
                break
            self._token = ""
        assert response is not None
        if response.status_code == 200:
            name = response.json().get("name", "")
            return SendResult(
                provider=self.provider_name, message_id=name, response=record(response)
            )
        raise self.error_for(response)

    def error_for(self, response: httpx.Response) -> ChannelError | ChannelConfigurationError:
        status, code, said = fcm_error(response)
        kind = self.ERRORS.get(code)
        if kind is None:
            if status == 404:
                kind = GONE
            elif status in (401, 403):
                kind = CONFIG
            elif status == 429 or status >= 500:
                kind = RETRY
            else:
                kind = PERMANENT
        detail = f"FCM answered HTTP {status} {code}: {said}"
        if kind == GONE:
            return self.gone(f"the registration token is gone ({detail})", code, record(response))
        if kind == RETRY:
            return self.transient(detail, code, response)
        if kind == CONFIG:
            return self.misconfigured(detail)
        return self.permanent(detail, code, record(response))


def fcm_error(response: httpx.Response) -> tuple[int, str, str]:
    """(HTTP status, FCM errorCode or else the RPC status, message) of an error answer."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    code = str(error.get("status") or response.status_code)
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            code = str(detail.get("errorCode") or code)
    return response.status_code, code, str(error.get("message") or response.text)[:300]
