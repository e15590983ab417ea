"""A local receiver for outgoing webhooks: Microsoft Teams, Discord, signed JSON.

Every request is recorded with its method, path, headers and raw body (the
base peer's ``requests``); those a receiver accepted are in ``accepted``.
Endpoints are registered per kind and answer like the real thing:

* ``discord``: ``POST /api/webhooks/<id>/<token>``; with ``?wait=true`` the
  answer is the created message (``200 {"id": …}``), else ``204``; an unknown
  webhook is ``404 {"message": "Unknown Webhook", "code": 10015}``;
* ``teams``: ``POST /teams/<token>`` answers ``200 1`` like a connector;
* ``plain``: ``POST /in/<token>`` takes any JSON (Apprise's ``json://``);
* ``signed``: ``POST /hooks/<token>`` checks ``X-Notify-Signature`` with
  :func:`channels.webhook.verify_signature` and the endpoint's secret: ``401``
  when it does not verify, else ``200 {"received": true}``.

Misbehaviour: ``respond(url, status, body, headers)`` for one endpoint from now
on (a 410 Gone, a 400...), ``ratelimit_next(n, retry_after)`` (429 with
``Retry-After``; Discord's JSON ``retry_after`` too), and the base peer's
``fail_next``, ``hang_next`` and ``stop``/``start``.

Fixture: ``webhook_peer``.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from channels.webhook import verify_signature
from tests.peers.http import HttpPeer, Reply, Request, running


@dataclass(frozen=True)
class Accepted:
    """A webhook the receiver took."""

    kind: str
    url: str
    body: Any  # the parsed JSON
    request: Request = field(repr=False)
    message_id: str = ""  # the id the receiver answered with (Discord), if any

    @property
    def delivery(self) -> str:
        return self.request.header("x-notify-delivery")


class WebhookPeer(HttpPeer):
    PREFIX = {"discord": "/api/webhooks/", "teams": "/teams/", "signed": "/hooks/", "plain": "/in/"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._endpoints: dict[str, tuple[str, bytes | None]] = {}  # path -> (kind, secret)
        self._overrides: dict[str, Reply] = {}
        self._ratelimits: list[float] = []
        self._accepted: list[Accepted] = []
        self._snowflakes = itertools.count(1_100_000_000_000_000_001)
        self._data_lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------

    def add_endpoint(self, kind: str, secret: str | bytes | None = None) -> str:
        """Register an endpoint of ``kind`` (see the module docstring); return its URL."""
        if kind == "discord":
            path = f"/api/webhooks/{next(self._snowflakes)}/{secrets.token_urlsafe(24)}"
        else:
            path = f"{self.PREFIX[kind]}{secrets.token_urlsafe(12)}"
        if isinstance(secret, str):
            secret = secret.encode()
        with self._data_lock:
            self._endpoints[path] = (kind, secret)
        return self.base_url + path

    def unknown_url(self, kind: str) -> str:
        """A URL of ``kind`` that no endpoint answers (a deleted webhook)."""
        if kind == "discord":
            return f"{self.base_url}/api/webhooks/1099999999999999999/{secrets.token_urlsafe(24)}"
        return f"{self.base_url}{self.PREFIX[kind]}{secrets.token_urlsafe(12)}"

    def respond(
        self,
        url: str,
        status: int,
        body: bytes | str | dict | list = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer every request to ``url`` with this reply from now on."""
        with self._data_lock:
            self._overrides[self._path(url)] = Reply(status, body, dict(headers or {}))

    def ratelimit_next(self, count: int = 1, retry_after: float = 1.0) -> None:
        with self._data_lock:
            self._ratelimits.extend([retry_after] * count)

    # -- what the receiver took -------------------------------------------------------

    @property
    def accepted(self) -> list[Accepted]:
        with self._data_lock:
            return list(self._accepted)

    # -- answering ------------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        with self._data_lock:
            limited = self._ratelimits.pop(0) if self._ratelimits else None
            override = self._overrides.get(request.path)
            kind, secret = self._endpoints.get(request.path, (None, None))
        if limited is not None:
            return Reply(
                429,
                {"message": "You are being rate limited.", "retry_after": limited, "global": False},
                {"Retry-After": str(math.ceil(limited))},  # Discord rounds the header up
            )
        if override is not None:
            return override
        if kind is None:
            if request.path.startswith(self.PREFIX["discord"]):
                return Reply(404, {"message": "Unknown Webhook", "code": 10015})
            return Reply(404, "not found")
        if request.method != "POST":
            return Reply(405, "method not allowed")
        if kind == "signed" and secret is not None:
            valid = verify_signature(
                secret,
                request.header("x-notify-timestamp"),
                request.body,
                request.header("x-notify-signature"),
            )
            if not valid:
                return Reply(401, {"error": "bad signature"})
        try:
            body = json.loads(request.body)
        except ValueError:
            return Reply(400, {"message": "Cannot send an empty message", "code": 50006})
        wait = request.query.get("wait", [""])[-1].lower() == "true"
        message_id = str(next(self._snowflakes)) if kind == "discord" and wait else ""
        self._take(Accepted(kind, self.base_url + request.path, body, request, message_id))
        if kind == "discord":
            if message_id:
                return Reply(200, {"id": message_id, "content": body.get("content")})
            return Reply(204, b"")
        if kind == "teams":
            return Reply(200, "1")
        return Reply(200, {"received": True})

    def _take(self, accepted: Accepted) -> None:
        with self._data_lock:
            self._accepted.append(accepted)

    def _path(self, url: str) -> str:
        return url.removeprefix(self.base_url).split("?")[0]


@pytest.fixture
def webhook_peer() -> Iterator[WebhookPeer]:
    """A running webhook receiver on a free port; stopped after the test."""
    yield from running(WebhookPeer)
