"""A local HTTP server speaking Slack's Web API and incoming webhooks.

Just enough of Slack for slack-sdk to talk to it for real:

* ``POST /api/chat.postMessage`` with ``Authorization: Bearer <bot token>`` and a
  JSON or form body. A wrong token gets Slack's ``200 {"ok": false, "error":
  "invalid_auth"}``; a member id gets a DM channel (``U0ALICE`` -> ``D0ALICE``)
  and ``{"ok": true, "channel", "ts", "message"}``.
* ``POST /services/T…/B…/…``: an incoming webhook; a registered one answers
  ``200 ok``, any other ``404 no_service``.

Misbehaviour, as Slack does it: ``error_for(user, "user_not_found")`` (any
``ok: false`` code for one channel or user), ``ratelimit_next(n, retry_after)``
(429 with ``Retry-After`` and ``ratelimited``), ``webhook_error(url, status,
text)``, plus the base peer's ``fail_next`` (500), ``hang_next`` and
``stop``/``start``.

Fixture: ``slack_peer``.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.peers.http import HttpPeer, Reply, Request, running

BOT_TOKEN = "xoxb-test-0000-notify"
BOT_USER = "U0BOT0001"


@dataclass(frozen=True)
class SlackMessage:
    """A message Slack accepted."""

    channel: str  # as asked for: a member id or a channel id
    dm_channel: str  # where it was posted
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    request: Request | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WebhookPost:
    """A post to an incoming webhook Slack accepted."""

    url: str
    body: dict[str, Any]
    request: Request = field(repr=False)


class SlackPeer(HttpPeer):
    def __init__(self, token: str = BOT_TOKEN, **kwargs: Any):
        super().__init__(**kwargs)
        self.token = token
        self._ts = itertools.count(100)
        self._errors: dict[str, str] = {}
        self._ratelimits: list[float] = []
        self._webhooks: set[str] = set()
        self._webhook_errors: dict[str, tuple[int, str]] = {}
        self._messages: list[SlackMessage] = []
        self._posts: list[WebhookPost] = []
        self._data_lock = threading.Lock()

    @property
    def api_url(self) -> str:
        """``BASE_URL`` for ``slack_sdk.WebClient``."""
        return f"{self.base_url}/api/"

    # -- set-up -------------------------------------------------------------------

    def error_for(self, channel: str, error: str) -> None:
        """Answer posts to ``channel`` (a member or channel id) with ``ok: false``."""
        with self._data_lock:
            self._errors[channel] = error

    def ratelimit_next(self, count: int = 1, retry_after: float = 1) -> None:
        with self._data_lock:
            self._ratelimits.extend([retry_after] * count)

    def add_webhook(self) -> str:
        """Register an incoming webhook; return its URL."""
        path = f"/services/T0TEAM/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
        with self._data_lock:
            self._webhooks.add(path)
        return self.base_url + path

    def webhook_error(self, url: str, status: int, text: str) -> None:
        with self._data_lock:
            self._webhook_errors[url.removeprefix(self.base_url)] = (status, text)

    # -- what Slack saw -------------------------------------------------------------

    @property
    def messages(self) -> list[SlackMessage]:
        with self._data_lock:
            return list(self._messages)

    @property
    def webhook_posts(self) -> list[WebhookPost]:
        with self._data_lock:
            return list(self._posts)

    # -- the API ----------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        with self._data_lock:
            limited = self._ratelimits.pop(0) if self._ratelimits else None
        if limited is not None:
            return Reply(
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": _seconds(limited)},
            )
        if request.method != "POST":
            return Reply(405, "method not allowed")
        if request.path == "/api/chat.postMessage":
            return self._post_message(request)
        if request.path.startswith("/services/"):
            return self._webhook(request)
        if request.path.startswith("/api/"):
            return Reply(404, {"ok": False, "error": "unknown_method"})
        return Reply(404, "not found")

    def _post_message(self, request: Request) -> Reply:
        if request.header("content-type").startswith("application/json"):
            args = request.json()
        else:
            args = request.form()
        token = request.header("authorization").removeprefix("Bearer ").strip()
        token = token or args.get("token", "")
        if not token:
            return Reply(200, {"ok": False, "error": "not_authed"})
        if token != self.token:
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        channel = args.get("channel") or ""
        if not channel:
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        text = args.get("text") or ""
        blocks = args.get("blocks") or []
        if not text and not blocks:
            return Reply(200, {"ok": False, "error": "no_text"})
        with self._data_lock:
            error = self._errors.get(channel)
            if error is not None:
                return Reply(200, {"ok": False, "error": error})
            ts = f"1700000000.{next(self._ts):06d}"
            dm_channel = "D" + channel[1:] if channel[:1] in "UW" else channel
            self._messages.append(SlackMessage(channel, dm_channel, ts, text, blocks, request))
        return Reply(
            200,
            {
                "ok": True,
                "channel": dm_channel,
                "ts": ts,
                "message": {
                    "type": "message",
                    "user": BOT_USER,
                    "text": text,
                    "blocks": blocks,
                    "ts": ts,
                },
            },
        )

    def _webhook(self, request: Request) -> Reply:
        with self._data_lock:
            error = self._webhook_errors.get(request.path)
            known = request.path in self._webhooks
        if error is not None:
            return Reply(error[0], error[1], {"Content-Type": "text/html"})
        if not known:
            return Reply(404, "no_service", {"Content-Type": "text/html"})
        try:
            body = request.json()
        except ValueError:
            return Reply(400, "invalid_payload", {"Content-Type": "text/html"})
        if not body.get("text") and not body.get("blocks"):
            return Reply(400, "no_text", {"Content-Type": "text/html"})
        with self._data_lock:
            self._posts.append(WebhookPost(self.base_url + request.path, body, request))
        return Reply(200, "ok", {"Content-Type": "text/html"})


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@pytest.fixture
def slack_peer() -> Iterator[SlackPeer]:
    """A running Slack peer on a free port; stopped after the test."""
    yield from running(SlackPeer)
