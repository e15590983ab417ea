"""Local peers that speak the three push protocols and check the auth they expect.

* :class:`FcmPeer` (HTTP/1.1): an OAuth2 token endpoint that verifies the
  service account's RS256 assertion with the account's *public* key (scope,
  audience, issuer, expiry), and ``POST /v1/projects/<project>/messages:send``
  that accepts only the bearer tokens it issued. Unknown registration tokens
  get FCM's ``404 NOT_FOUND`` with ``errorCode: UNREGISTERED``.
* :class:`ApnsPeer` (HTTP/2, h2c): ``POST /3/device/<token>`` checking the
  ES256 provider token (``kid``, ``iss``, age) with the key's public half,
  ``apns-topic`` and ``apns-push-type``. Unknown tokens get ``410
  Unregistered``, malformed ones ``400 BadDeviceToken``.
* :class:`WebPushPeer` (HTTP/1.1): a push service. It makes subscriptions
  (its own P-256 key pair and auth secret per subscription, like a browser),
  checks the VAPID JWT (ES256 with the ``k=`` key, ``aud`` = its origin,
  ``exp``, ``sub``) and DECRYPTS the aes128gcm payload with the subscription's
  private key (``http_ece``). Unknown subscriptions get ``410 Gone``.

The keys are generated here, with ``cryptography``; nothing is shared with
the channels but the protocols.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import http_ece
import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from requests.adapters import HTTPAdapter

from tests.peers.h2 import H2Peer
from tests.peers.http import HttpPeer, Reply, Request

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fcm_error(status: int, rpc: str, message: str, code: str = "") -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc}
    if code:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": code}]
    return Reply(status, {"error": error})


@dataclass(frozen=True)
class Push:
    """A push a peer accepted: to which device, with which id, saying what."""

    to: str
    message_id: str
    body: dict[str, Any]
    request: Request


class _Canned:
    """Failures for the next messages only (not for token requests)."""

    def __init__(self) -> None:
        self._message_failures: list[Reply] = []
        self._failures_lock = threading.Lock()

    def fail_messages(self, replies: list[Reply]) -> None:
        with self._failures_lock:
            self._message_failures.extend(replies)

    def next_canned(self) -> Reply | None:
        with self._failures_lock:
            return self._message_failures.pop(0) if self._message_failures else None


# -- FCM ----------------------------------------------------------------------------------------


class FcmPeer(HttpPeer, _Canned):
    project = "notify-test"

    def __init__(self, **kwargs: Any):
        HttpPeer.__init__(self, **kwargs)
        _Canned.__init__(self)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        self.credentials = {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": secrets.token_hex(8),
            "private_key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "client_email": f"push@{self.project}.iam.gserviceaccount.com",
            "token_uri": f"{self.base_url}/token",
        }
        self.tokens: set[str] = set()  # registration tokens of known devices
        self.access_tokens: set[str] = set()
        self.token_requests = 0
        self.pushes: list[Push] = []

    def add_device(self) -> str:
        token = "fcm-" + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return token

    def fail_next(self, count: int = 1, status: int = 503, **_: Any) -> None:
        rpc = "UNAVAILABLE" if status >= 500 else "RESOURCE_EXHAUSTED"
        reply = fcm_error(status, rpc, "The service is currently unavailable.")
        self.fail_messages([Reply(reply.status, reply.body, {"Retry-After": "7"})] * count)

    def channel_options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "CREDENTIALS": self.credentials,
            "BASE_URL": self.base_url,
            "TIMEOUT": 5,
            **overrides,
        }

    def answer(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/token":
            return self.token(request)
        prefix = f"/v1/projects/{self.project}/messages:send"
        if request.method != "POST" or not request.path.startswith("/v1/projects/"):
            return Reply(404, "not found")
        bearer = request.header("authorization").removeprefix("Bearer ")
        if bearer not in self.access_tokens:
            return fcm_error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
            )
        if request.path != prefix:
            return fcm_error(403, "PERMISSION_DENIED", "Permission denied on the project.")
        canned = self.next_canned()
        if canned is not None:
            return canned
        message = request.json().get("message") or {}
        token = message.get("token", "")
        if token not in self.tokens:
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if not message.get("notification", {}).get("title"):
            return fcm_error(
                400, "INVALID_ARGUMENT", "notification.title is empty", "INVALID_ARGUMENT"
            )
        name = f"projects/{self.project}/messages/0:{uuid.uuid4().hex}"
        self.pushes.append(Push(token, name, message, request))
        return Reply(200, {"name": name})

    def token(self, request: Request) -> Reply:
        """RFC 7523: check the assertion the way Google's token endpoint does."""
        self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key,
                algorithms=["RS256"],
                audience=self.credentials["token_uri"],
                issuer=self.credentials["client_email"],
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return Reply(400, {"error": "invalid_grant", "error_description": str(exc)})
        if claims.get("scope") != SCOPE or claims["exp"] - claims["iat"] > 3600:
            return Reply(400, {"error": "invalid_scope"})
        access = "ya29." + secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        return Reply(200, {"access_token": access, "expires_in": 3599, "token_type": "Bearer"})


# -- APNs ---------------------------------------------------------------------------------------


class ApnsPeer(H2Peer, _Canned):
    key_id = "ABC123DEFG"
    team_id = "DEF123GHIJ"
    topic = "com.example.notify"

    def __init__(self, **kwargs: Any):
        H2Peer.__init__(self, **kwargs)
        _Canned.__init__(self)
        key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = key.public_key()
        self.signing_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.tokens: set[str] = set()
        self.pushes: list[Push] = []

    def add_device(self) -> str:
        token = secrets.token_hex(32)
        self.tokens.add(token)
        return token

    def fail_next(self, count: int = 1, status: int = 503, **_: Any) -> None:
        reason = "TooManyRequests" if status == 429 else "ServiceUnavailable"
        self.fail_messages([Reply(status, {"reason": reason}, {"Retry-After": "5"})] * count)

    def channel_options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "KEY": self.signing_key,
            "KEY_ID": self.key_id,
            "TEAM_ID": self.team_id,
            "TOPIC": self.topic,
            "BASE_URL": self.base_url,
            "TIMEOUT": 5,
            **overrides,
        }

    def answer(self, request: Request) -> Reply:
        if request.method != "POST" or not request.path.startswith("/3/device/"):
            return Reply(405, {"reason": "MethodNotAllowed"})
        refused = self.check_provider_token(request.header("authorization"))
        if refused:
            return Reply(403, {"reason": refused})
        if request.header("apns-topic") != self.topic:
            return Reply(400, {"reason": "DeviceTokenNotForTopic"})
        if request.header("apns-push-type") not in ("alert", "background"):
            return Reply(400, {"reason": "InvalidPushType"})
        canned = self.next_canned()
        if canned is not None:
            return canned
        token = request.path.removeprefix("/3/device/")
        if len(token) != 64 or any(c not in "0123456789abcdef" for c in token.lower()):
            return Reply(400, {"reason": "BadDeviceToken"})
        if token not in self.tokens:
            return Reply(410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)})
        apns_id = str(uuid.uuid4()).upper()
        self.pushes.append(Push(token, apns_id, request.json(), request))
        return Reply(200, b"", {"apns-id": apns_id})

    def check_provider_token(self, authorization: str) -> str:
        """ "" when the provider token is good, else APNs's reason for refusing it."""
        if not authorization.startswith("bearer "):
            return "MissingProviderToken"
        token = authorization.removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"])
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            return "InvalidProviderToken"
        if time.time() - float(claims.get("iat", 0)) > 3600:
            return "ExpiredProviderToken"
        return ""


# -- Web Push -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    address: str  # the PushSubscription JSON a browser would hand the page


class WebPushPeer(HttpPeer):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        key = ec.generate_private_key(ec.SECP256R1())
        # The application server's VAPID key pair (the channel signs with it).
        self.vapid_private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.vapid_public_key = b64url(
            key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )
        self.subscriptions: dict[str, Subscription] = {}
        self.pushes: list[Push] = []
        self.refusals: list[str] = []
        # The VAPID audience it expects: its own origin, or the origin of the
        # real push service it stands in for (``adopt``).
        self.audience = ""

    def adopt(self, address: str, private_key: ec.EllipticCurvePrivateKey) -> str:
        """Stand in for the push service of a subscription a real browser made
        (``address``: its ``PushSubscription`` JSON; ``private_key``: the
        browser's, from its profile). Returns the id its pushes are posted to
        (``/push/<id>``): the last segment of the endpoint."""
        data = json.loads(address)
        sub_id = data["endpoint"].rstrip("/").rsplit("/", 1)[1]
        auth = unb64url(data["keys"]["auth"])
        self.subscriptions[sub_id] = Subscription(sub_id, private_key, auth, address)
        return sub_id

    def subscribe(self) -> str:
        """A new subscription, as ``PushSubscription.toJSON()`` gives it."""
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        sub_id, auth = secrets.token_urlsafe(16), os.urandom(16)
        address = json.dumps(
            {
                "endpoint": f"{self.base_url}/push/{sub_id}",
                "expirationTime": None,
                "keys": {"p256dh": b64url(public), "auth": b64url(auth)},
            }
        )
        self.subscriptions[sub_id] = Subscription(sub_id, private, auth, address)
        return address

    def gone_address(self) -> str:
        address = self.subscribe()
        del self.subscriptions[json.loads(address)["endpoint"].rsplit("/", 1)[1]]
        return address

    def fail_next(self, count: int = 1, status: int = 503, **_: Any) -> None:
        super().fail_next(count, status, "try later", {"Retry-After": "9"})

    def channel_options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "VAPID_PRIVATE_KEY": self.vapid_private_key,
            "VAPID_SUBJECT": "mailto:ops@example.com",
            "ALLOW_HTTP": True,
            "ALLOWED_HOSTS": [self.host],
            "TIMEOUT": 5,
            **overrides,
        }

    def answer(self, request: Request) -> Reply:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return Reply(404, "not found")
        refused = self.check_vapid(request.header("authorization"))
        if refused:
            self.refusals.append(refused)
            return Reply(401, refused)
        subscription = self.subscriptions.get(request.path.removeprefix("/push/"))
        if subscription is None:
            return Reply(410, "push subscription has unsubscribed or expired.")
        if request.header("content-encoding") != "aes128gcm" or not request.header("ttl"):
            return Reply(400, "aes128gcm content and a TTL are required")
        try:
            plain = http_ece.decrypt(
                request.body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth,
                version="aes128gcm",
            )
        except Exception as exc:  # a payload we cannot decrypt is the sender's fault
            return Reply(400, f"cannot decrypt: {exc}")
        message_id = f"{self.base_url}/m/{uuid.uuid4().hex}"
        self.pushes.append(Push(subscription.address, message_id, json.loads(plain), request))
        return Reply(201, b"", {"Location": message_id})

    def check_vapid(self, authorization: str) -> str:
        """ "" when the VAPID authorization (RFC 8292) is good, else why not."""
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return "no vapid authorization"
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if fields.get("k") != self.vapid_public_key:
            return "unexpected application server key"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        try:
            claims = jwt.decode(
                fields.get("t", ""),
                public,
                algorithms=["ES256"],
                audience=self.audience or self.base_url,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return f"bad vapid token: {exc}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "vapid token expires more than 24h ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "vapid sub must be mailto: or https:"
        return ""


class RouteToPeer(HTTPAdapter):
    """Mounted on the channel's ``requests`` session for a real push service's
    origin: posts that endpoint's pushes to the local peer instead (the
    channel's headers, VAPID token and encrypted body unchanged). What
    ``--host-resolver-rules`` does for Chromium, for the test's Python."""

    def __init__(self, peer: WebPushPeer):
        super().__init__()
        self.peer = peer

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        sub_id = request.url.rstrip("/").rsplit("/", 1)[1]
        request.url = f"{self.peer.base_url}/push/{sub_id}"
        return super().send(request, *args, **kwargs)
