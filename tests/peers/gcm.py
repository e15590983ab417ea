"""A local stand-in for the two Google endpoints Chromium calls when a page
subscribes to Web Push, so that ``PushManager.subscribe`` runs for real.

Chromium's push service is Google's: ``subscribe`` first checks the browser in
(``POST /checkin``, an ``AndroidCheckinResponse`` protobuf) and then registers
the subscription (``POST /c2dm/register3``, form-encoded, answered
``token=<id>``). Chromium reads both URLs from its own command-line switches,
``--gcm-checkin-url`` and ``--gcm-registration-url`` (``chromium_args``), so
this peer answers them on loopback. Everything else is Chromium's: the P-256
key pair and auth secret it generates and keeps in the profile, the endpoint
it builds from the token (``https://jmt17.google.com/fcm/send/<token>`` in
Chromium 156) and the ``PushSubscription`` JSON the page gets.

:func:`browser_private_key` reads the subscription's private key back out of
the profile (``Default/GCM Store/Encryption``, a LevelDB whose records hold
the key as PKCS#8 DER), so the Web Push peer can decrypt what the channel
encrypted for the browser's own ``p256dh``/``auth``.
"""

from __future__ import annotations

import base64
import secrets
import struct
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.http import HttpPeer, Reply, Request

# The DER prefix of a PKCS#8 P-256 private key with its public key (138 bytes).
PKCS8_P256 = bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107")
PKCS8_P256_LENGTH = 0x8A


def checkin_response(android_id: int, security_token: int) -> bytes:
    """An ``AndroidCheckinResponse``: stats_ok (1), android_id (7, fixed64),
    security_token (8, fixed64), settings_diff (9) = false."""
    return (
        b"\x08\x01"
        + b"\x39"
        + struct.pack("<Q", android_id)
        + b"\x41"
        + struct.pack("<Q", security_token)
        + b"\x48\x00"
    )


class GcmRegistrationPeer(HttpPeer):
    """Answers Chromium's GCM check-in and registration; records what it was sent."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.android_id = secrets.randbits(62) | 1
        self.security_token = secrets.randbits(62) | 1
        self.checkins = 0
        self.registrations: list[dict[str, str]] = []  # the forms of register3, with "token"

    def chromium_args(self) -> list[str]:
        return [
            f"--gcm-checkin-url={self.base_url}/checkin",
            f"--gcm-registration-url={self.base_url}/c2dm/register3",
            # Receiving (MCS) is not served: Chromium retries it in the background.
            f"--gcm-mcs-endpoint={self.base_url}/mcs",
        ]

    def answer(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/checkin":
            self.checkins += 1
            body = checkin_response(self.android_id, self.security_token)
            return Reply(200, body, {"Content-Type": "application/x-protobuf"})
        if request.method == "POST" and request.path == "/c2dm/register3":
            form = request.form()
            if form.get("delete"):
                return Reply(200, f"deleted={form.get('app', '')}")
            token = secrets.token_urlsafe(12) + ":" + secrets.token_urlsafe(90)
            self.registrations.append({**form, "token": token})
            return Reply(200, f"token={token}")
        return Reply(404, "not found")

    def web_push_registrations(self) -> list[dict[str, str]]:
        """Registrations of Web Push subscriptions (not Chromium's own GCM app)."""
        return [r for r in self.registrations if r.get("X-subtype", "").startswith("wp:")]


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_private_key(profile: Path, p256dh: str) -> ec.EllipticCurvePrivateKey:
    """The private key Chromium generated for the subscription whose public key
    is ``p256dh``, read from the profile's GCM key store."""
    wanted = unb64url(p256dh)
    store = profile / "Default" / "GCM Store" / "Encryption"
    for path in sorted(store.glob("*")):
        data = path.read_bytes() if path.is_file() else b""
        start = data.find(PKCS8_P256)
        while start >= 0:
            der = data[start : start + PKCS8_P256_LENGTH]
            try:
                key = serialization.load_der_private_key(der, password=None)
            except ValueError:
                key = None
            if isinstance(key, ec.EllipticCurvePrivateKey):
                public = key.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
                if public == wanted:
                    return key
            start = data.find(PKCS8_P256, start + 1)
    raise LookupError(f"no key for {p256dh[:16]}… in {store}")
