"""A local HTTP server speaking the group-robot webhooks of WeCom, DingTalk and
Feishu/Lark, checking their credentials the way the real services do.

One server answers all three, by path:

* WeCom ``POST /cgi-bin/webhook/send?key=<key>``: an unknown key gets
  ``{"errcode": 93000, "errmsg": "invalid webhook url…"}`` (HTTP 200).
* DingTalk ``POST /robot/send?access_token=<token>[&timestamp=<ms>&sign=<sign>]``:
  an unknown token gets ``300001``; a robot with a secret checks ``sign`` =
  base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")) and a timestamp within
  an hour, else ``{"errcode": 310000, "errmsg": "sign not match…"}``.
* Feishu ``POST /open-apis/bot/v2/hook/<token>``: an unknown token gets
  ``19001``; a robot with a secret checks the body's ``sign`` =
  base64(HMAC-SHA256(key="<timestamp>\\n<secret>", msg="")) and ``timestamp``
  (seconds, within an hour), else ``{"code": 19021, …}``.

Each also checks the message's shape (``msgtype``/``msg_type`` and its fields)
and, like the real robots, answers errors with HTTP 200 and a JSON code.
The signatures are computed here independently of ``channels.robots``.

Addresses are the real services' URLs (``https://oapi.dingtalk.com/robot/send?
access_token=…``, with ``#secret=…`` when the robot signs): a channel reaches
the peer through its ``BASE_URL`` option (:meth:`RobotPeer.channel_options`).

Misbehaviour: ``error_for(address, code, message)`` (any answer code for one
robot), ``ratelimit_next(provider, n)`` (the provider's rate-limit answer),
``busy_next(provider, n)`` (its "system busy"), ``limit_per_minute`` (answer
the rate-limit code past that many posts a minute per robot, as the services
do), plus the base peer's ``fail_next``, ``hang_next`` and ``stop``/``start``.

Fixture: ``robot_peer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.peers.http import HttpPeer, Reply, Request, running

URLS = {
    "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={token}",
    "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token={token}",
    "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/{token}",
}
FEISHU_PATH = "/open-apis/bot/v2/hook/"
ONE_HOUR = 3600

# The answers each service gives, as (HTTP status, body).
OK = {
    "wecom": (200, {"errcode": 0, "errmsg": "ok"}),
    "dingtalk": (200, {"errcode": 0, "errmsg": "ok"}),
    "feishu": (
        200,
        {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"},
    ),
}
RATE_LIMITED = {
    "wecom": (200, {"errcode": 45009, "errmsg": "api freq out of limit"}),
    "dingtalk": (200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
    "feishu": (400, {"code": 11232, "msg": "frequency limited", "data": {}}),
}
BUSY = {
    "wecom": (200, {"errcode": -1, "errmsg": "system busy"}),
    "dingtalk": (200, {"errcode": -1, "errmsg": "系统繁忙"}),
    "feishu": (500, {"code": 9499, "msg": "Internal Server Error", "data": {}}),
}


def answer(provider: str, code: int, message: str, status: int = 200) -> Reply:
    if provider == "feishu":
        return Reply(status, {"code": code, "msg": message, "data": {}})
    return Reply(status, {"errcode": code, "errmsg": message})


@dataclass(frozen=True)
class RobotPost:
    """A message a robot accepted."""

    provider: str
    token: str
    address: str  # the robot's URL as a contact point holds it (without the secret)
    body: dict[str, Any]
    request: Request = field(repr=False)

    @property
    def delivery(self) -> str:
        return self.request.header("x-notify-delivery")


class RobotPeer(HttpPeer):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.limit_per_minute: int | None = None
        self._robots: dict[tuple[str, str], str] = {}  # (provider, token) -> secret
        self._errors: dict[tuple[str, str], tuple[int, str, int]] = {}
        self._posts: list[RobotPost] = []
        self._windows: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._data_lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------

    def add_robot(self, provider: str, secret: str = "") -> str:
        """Register a robot; return its address (``…#secret=…`` when it signs)."""
        token = secrets.token_hex(16)
        with self._data_lock:
            self._robots[(provider, token)] = secret
        url = URLS[provider].format(token=token)
        return f"{url}#secret={secret}" if secret else url

    def unknown_address(self, provider: str) -> str:
        return URLS[provider].format(token="0" * 32)

    def error_for(self, address: str, code: int, message: str, status: int = 200) -> None:
        provider, token = self.identify(address)
        with self._data_lock:
            self._errors[(provider, token)] = (code, message, status)

    def ratelimit_next(self, provider: str, count: int = 1, headers: dict | None = None) -> None:
        status, body = RATE_LIMITED[provider]
        self.fail_next(count, status, body, headers)

    def busy_next(self, provider: str, count: int = 1) -> None:
        status, body = BUSY[provider]
        self.fail_next(count, status, body)

    def channel_options(self, **overrides: Any) -> dict[str, Any]:
        """``OPTIONS`` for a robot channel talking to this peer."""
        return {"BASE_URL": self.base_url, "TIMEOUT": 5, **overrides}

    # -- what the robots saw ----------------------------------------------------------

    @property
    def posts(self) -> list[RobotPost]:
        with self._data_lock:
            return list(self._posts)

    @staticmethod
    def identify(address: str) -> tuple[str, str]:
        """(provider, token) of an address or of a request's path and query."""
        parts = urlsplit(address.partition("#")[0])
        if parts.path.startswith(FEISHU_PATH):
            return "feishu", parts.path.removeprefix(FEISHU_PATH)
        query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
        if parts.path == "/robot/send":
            return "dingtalk", query.get("access_token", "")
        return "wecom", query.get("key", "")

    # -- the services -------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, "method not allowed")
        if request.path == "/cgi-bin/webhook/send":
            provider, token = "wecom", request.query.get("key", [""])[-1]
        elif request.path == "/robot/send":
            provider, token = "dingtalk", request.query.get("access_token", [""])[-1]
        elif request.path.startswith(FEISHU_PATH):
            provider, token = "feishu", request.path.removeprefix(FEISHU_PATH)
        else:
            return Reply(404, "not found")
        with self._data_lock:
            secret = self._robots.get((provider, token))
            error = self._errors.get((provider, token))
        if secret is None:
            return {
                "wecom": answer("wecom", 93000, "invalid webhook url, hint: [peer]"),
                "dingtalk": answer("dingtalk", 300001, "token is not exist"),
                "feishu": answer(
                    "feishu", 19001, "param invalid: incoming webhook access token invalid"
                ),
            }[provider]
        try:
            body = request.json()
        except ValueError:
            return answer(provider, 40035 if provider != "feishu" else 9499, "invalid json")
        if not isinstance(body, dict):
            return answer(provider, 40035, "invalid json")
        refusal = self._check_signature(provider, secret, request, body)
        if refusal is not None:
            return refusal
        if error is not None:
            return answer(provider, error[0], error[1], error[2])
        problem = SHAPE_CHECKS[provider](body)
        if problem is not None:
            return answer(provider, *problem)
        if self._over_limit(provider, token):
            status, limited = RATE_LIMITED[provider]
            return Reply(status, limited)
        address = URLS[provider].format(token=token)
        with self._data_lock:
            self._posts.append(RobotPost(provider, token, address, body, request))
        status, ok = OK[provider]
        return Reply(status, ok)

    def _over_limit(self, provider: str, token: str) -> bool:
        if self.limit_per_minute is None:
            return False
        now = time.monotonic()
        with self._data_lock:
            window = [t for t in self._windows[(provider, token)] if now - t < 60]
            window.append(now)
            self._windows[(provider, token)] = window
            return len(window) > self.limit_per_minute

    def _check_signature(
        self, provider: str, secret: str, request: Request, body: dict[str, Any]
    ) -> Reply | None:
        if not secret or provider == "wecom":
            return None
        if provider == "dingtalk":
            timestamp = request.query.get("timestamp", [""])[-1]
            sign = request.query.get("sign", [""])[-1]
            try:
                fresh = abs(time.time() * 1000 - int(timestamp)) <= ONE_HOUR * 1000
            except ValueError:
                fresh = False
            digest = hmac.new(
                secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256
            ).digest()
            if fresh and hmac.compare_digest(sign, base64.b64encode(digest).decode()):
                return None
            return answer(
                "dingtalk",
                310000,
                "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            )
        timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
        try:
            fresh = abs(time.time() - int(timestamp)) <= ONE_HOUR
        except ValueError:
            fresh = False
        digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
        if fresh and hmac.compare_digest(sign, base64.b64encode(digest).decode()):
            return None
        return answer(
            "feishu", 19021, "sign match fail or timestamp is not within one hour from current time"
        )


# -- the message shapes each service accepts ------------------------------------------------


def _wecom_shape(body: dict[str, Any]) -> tuple[int, str] | None:
    kind = body.get("msgtype")
    limits = {"text": 2048, "markdown": 4096}
    if kind not in limits:
        return 40008, "invalid message type"
    content = (body.get(kind) or {}).get("content") or ""
    if not content:
        return 44004, "empty content"
    if len(content.encode()) > limits[kind]:
        return 40058, f"{kind}.content exceed max length {limits[kind]}"
    return None


def _dingtalk_shape(body: dict[str, Any]) -> tuple[int, str] | None:
    kind = body.get("msgtype")
    required = {
        "text": ("content",),
        "markdown": ("title", "text"),
        "actionCard": ("title", "text", "singleTitle", "singleURL"),
    }
    if kind not in required:
        return 40035, "缺少参数 json"
    part = body.get(kind) or {}
    if not all(isinstance(part.get(name), str) and part[name] for name in required[kind]):
        return 40035, "缺少参数 json"
    return None


def _feishu_shape(body: dict[str, Any]) -> tuple[int, str] | None:
    kind = body.get("msg_type")
    if kind == "text" and (body.get("content") or {}).get("text"):
        return None
    card = body.get("card") or {}
    if kind == "interactive" and card.get("header", {}).get("title", {}).get("content"):
        return None
    return 9499, "Bad Request"


SHAPE_CHECKS = {"wecom": _wecom_shape, "dingtalk": _dingtalk_shape, "feishu": _feishu_shape}


@pytest.fixture
def robot_peer() -> Iterator[RobotPeer]:
    """A running WeCom/DingTalk/Feishu robot peer on a free port; stopped after the test."""
    yield from running(RobotPeer)
