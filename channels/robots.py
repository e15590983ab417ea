"""Group robots of WeCom (企业微信), DingTalk (钉钉) and Feishu/Lark (飞书): a message
posted to a group chat through the robot's webhook URL.

Each robot is one :class:`channels.http.HttpWebhookChannel` that differs in four
small steps: the payload (pure functions in :mod:`channels.robot_cards`), the signature (DingTalk signs in the
query string, Feishu in the body, WeCom's key is part of the URL), how the
answer says "no" (a JSON ``errcode``/``code`` other than 0, usually with HTTP
200), and the table ``ERRORS`` that maps those codes to our error family.

The channel-neutral message becomes a card: the title is ``message.subject``
or else the first line of the rendered ``chat`` part, the body is the rest
(Slack-style ``*bold*`` and ``<url|label>`` turned into Markdown), and
``extra["url"]`` a "View" link or button.

Where a robot is configured — two modes, chosen by the options:

Per team: ``WEBHOOK_URL`` (and ``SECRET`` when the robot signs) in the
    channel's ``OPTIONS``. The channel needs no contact point (its address kind
    is ``None``) and every delivery on it posts to that one group, so route a
    rule there for one recipient (a team's service user), not a crowd.
Per user: without ``WEBHOOK_URL``, each recipient's contact point of kind
    ``wecom``/``dingtalk``/``feishu`` holds the robot's URL; a signing secret
    goes in the URL's fragment, ``…#secret=SEC…`` (a fragment is never sent).

Options (all optional except as said):

``WEBHOOK_URL``, ``SECRET``
    The team robot and its signing secret (DingTalk "加签", Feishu "签名校验").
``MESSAGE_TYPE``
    ``"markdown"`` (default: a card with a title, Markdown and a link button)
    or ``"text"`` (plain text, for robots whose group cannot show Markdown).
``LINK_TEXT``
    The label of the link button (default ``"View"``).
``BASE_URL``
    Send to this origin instead of the robot URL's own (``http://127.0.0.1:8001``
    for a local peer, or a forward proxy); the URL's path and query are kept.
``RATE_LIMIT``
    Sends per robot (default ``"20/m"``, the providers' documented limit for
    WeCom and DingTalk; Feishu allows 100/m), counted per robot URL across all
    workers by :mod:`channels.ratelimit` over any span of the period, not per
    clock minute (a burst across a minute's end gets a robot throttled); ``""`` turns our pacing off. ``CACHE``
    names the ``CACHES`` alias it counts in.
``TIMEOUT``, ``ALLOW_HTTP``, ``ALLOWED_HOSTS``
    As in :mod:`channels.http`; by default only https to the provider's hosts.

Errors: a refused key or token, or a robot that was removed, is an
:class:`InvalidRecipient` for a user's contact point and a
:class:`ChannelConfigurationError` for a team robot (an operator must fix
``WEBHOOK_URL``); a signature, keyword or IP-allow-list refusal is a
:class:`PermanentError` for a contact point and a configuration error for a
team robot (fix ``SECRET`` or the robot's security settings); the providers'
rate limits and "system busy" are :class:`TransientError` with ``retry_after``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from .base import (
    ChannelConfigurationError,
    ChannelError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from .http import HttpWebhookChannel, parse_retry_after, redact
from .ratelimit import SlidingLimiter, parse_rate
from .robot_cards import Card, dingtalk_payload, feishu_payload, wecom_payload

DEFAULT_RATE = "20/m"

# What an error code means, whatever the robot: the class follows from the kind
# and from where the robot is configured (see RobotChannel.classify).
RATE_LIMITED = "rate_limited"  # transient, retry after the provider's window
BUSY = "busy"  # transient
GONE = "gone"  # the key/token is unknown or the robot was removed
REFUSED = "refused"  # signature, keyword or IP allow-list check failed
BAD_MESSAGE = "bad_message"  # permanent: the payload itself

ErrorTable = dict[int, tuple[str, str]]


# -- signatures (standalone, so a receiver can copy them) ---------------------


def dingtalk_sign(secret: str, timestamp_ms: int | str) -> str:
    """DingTalk: base64(HMAC-SHA256(key=secret, msg="<timestamp ms>\\n<secret>")),
    sent URL-encoded as the ``sign`` query parameter next to ``timestamp``."""
    signed = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def feishu_sign(secret: str, timestamp_s: int | str) -> str:
    """Feishu/Lark: base64(HMAC-SHA256(key="<timestamp s>\\n<secret>", msg=b"")),
    sent as the body fields ``sign`` and ``timestamp``."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


# -- the channels -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Robot:
    """A robot's webhook URL (what is posted to) and its signing secret."""

    url: str
    secret: str = ""


def split_secret(address: str) -> Robot:
    """``https://…#secret=SEC…`` → ``Robot(url without fragment, secret)``."""
    url, _, fragment = address.strip().partition("#")
    secret = parse_qs(fragment).get("secret", [""])[-1] if fragment else ""
    return Robot(url, secret.strip())


class RobotChannel(HttpWebhookChannel):
    """What the three robots share; a subclass sets the class attributes and
    ``build_payload`` (and, to sign, ``sign_url`` or ``sign_payload``)."""

    accepted_options = HttpWebhookChannel.accepted_options | {
        "WEBHOOK_URL",
        "SECRET",
        "MESSAGE_TYPE",
        "LINK_TEXT",
        "BASE_URL",
        "RATE_LIMIT",
        "CACHE",
    }

    provider_label: ClassVar[str] = ""  # "WeCom", as operators know it
    code_field: ClassVar[str] = "errcode"  # where the answer's code is
    message_field: ClassVar[str] = "errmsg"
    ERRORS: ClassVar[ErrorTable] = {}
    # Seconds to wait after the provider's own rate-limit answer (no Retry-After is sent).
    RATE_LIMIT_WAIT: ClassVar[float] = 60.0

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        team = split_secret(options.get("WEBHOOK_URL") or "")
        self.team_robot = Robot(team.url, (options.get("SECRET") or "").strip() or team.secret)
        # Per team: no contact point needed. Per user: the provider's kind.
        self.address_kind = None if team.url else self.provider_name
        self.message_type = (options.get("MESSAGE_TYPE") or "markdown").lower()
        self.link_text = options.get("LINK_TEXT") or "View"
        self.base_url = (options.get("BASE_URL") or "").rstrip("/")
        rate = options.get("RATE_LIMIT", DEFAULT_RATE)
        self.rate = parse_rate(rate) if rate else None
        self.cache_alias = options.get("CACHE", "default")

    @property
    def per_team(self) -> bool:
        return self.address_kind is None

    def check_configuration(self) -> None:
        where = f"NOTIFY['CHANNELS']['{self.alias}']['OPTIONS']"
        if self.message_type not in ("markdown", "text"):
            raise ChannelConfigurationError(
                f"{self.provider_label} robot channel '{self.alias}': {where}['MESSAGE_TYPE'] "
                f"must be 'markdown' or 'text', not {self.message_type!r}."
            )
        if self.per_team:
            try:
                self.url_policy.check(self.team_robot.url, self.provider_name)
            except InvalidRecipient as exc:
                raise ChannelConfigurationError(
                    f"{self.provider_label} robot channel '{self.alias}': {where}['WEBHOOK_URL'] "
                    f"is not usable: {exc.message}"
                ) from exc

    # -- one send -------------------------------------------------------------------

    def robot(self, message: OutgoingMessage) -> Robot:
        return self.team_robot if self.per_team else split_secret(message.to)

    def open(self) -> None:
        self.check_configuration()
        super().open()

    def send(self, message: OutgoingMessage) -> SendResult:
        if self.session is None:
            self.open()
        url = self.url_policy.check(self.robot(message).url, self.provider_name)
        if self.rate is not None:  # about 20 a minute per robot, shared by every worker
            key = hashlib.sha256(url.encode()).hexdigest()[:24]
            SlidingLimiter(
                f"robot:{self.provider_name}:{key}", self.rate, cache_alias=self.cache_alias
            ).acquire(provider=self.provider_name)
        return super().send(message)

    def target_url(self, message: OutgoingMessage) -> str:
        robot = self.robot(message)
        url = self.url_policy.check(robot.url, self.provider_name)
        if self.base_url:  # a local peer or a proxy: same path and query, another origin
            parts = urlsplit(url)
            base = urlsplit(self.base_url)
            url = urlunsplit(
                parts._replace(scheme=base.scheme, netloc=base.netloc, path=base.path + parts.path)
            )
        return self.sign_url(url, robot.secret)

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        payload = self.shape(Card.of(message))
        secret = self.robot(message).secret
        return self.sign_payload(payload, secret) if secret else payload

    def shape(self, card: Card) -> dict[str, Any]:
        raise NotImplementedError

    def sign_url(self, url: str, secret: str) -> str:
        return url

    def sign_payload(self, payload: dict[str, Any], secret: str) -> dict[str, Any]:
        return payload

    # -- the answer -------------------------------------------------------------------

    def answer(self, response: requests.Response) -> tuple[int | None, str]:
        """The provider's (code, message) from the JSON answer; (None, "") without one."""
        try:
            data = response.json()
        except ValueError:
            return None, ""
        if not isinstance(data, dict):
            return None, ""
        code = data.get(self.code_field, data.get("StatusCode"))  # old Feishu answers
        text = data.get(self.message_field, data.get("StatusMessage")) or ""
        try:
            return (None if code is None else int(code)), str(text)[:300]
        except (TypeError, ValueError):
            return None, str(text)[:300]

    def status_of(self, response: requests.Response) -> int:
        """An error code in a 200 answer makes it an error (checked in ``error_for``)."""
        code, _ = self.answer(response)
        if response.ok and code not in (None, 0):
            return 400
        return response.status_code

    def response_record(self, response: requests.Response) -> dict[str, Any]:
        code, text = self.answer(response)
        if code is None:
            return super().response_record(response)
        return {"status": response.status_code, "code": code, "message": text}

    def error_for(self, response: requests.Response, status: int) -> ChannelError:
        code, text = self.answer(response)
        if code in (None, 0):
            return super().error_for(response, response.status_code)
        kind, reason = self.ERRORS.get(
            code, (BAD_MESSAGE, f"{self.provider_label} refused the message")
        )
        if kind == BAD_MESSAGE and (response.status_code == 429 or response.status_code >= 500):
            kind = BUSY
        detail = f"{reason} ({self.provider_label} {self.code_field} {code}: {text}; HTTP {response.status_code})"
        fields: dict[str, Any] = {
            "code": str(code),
            "provider": self.provider_name,
            "response": self.response_record(response),
        }
        if kind in (RATE_LIMITED, BUSY):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None and kind == RATE_LIMITED:
                retry_after = self.RATE_LIMIT_WAIT
            return TransientError(detail, retry_after=retry_after, **fields)
        if kind in (GONE, REFUSED) and self.per_team:
            what = "WEBHOOK_URL" if kind == GONE else "SECRET (and the robot's security settings)"
            raise ChannelConfigurationError(
                f"{self.provider_label} robot channel '{self.alias}': {detail}. Check {what} "
                f"in NOTIFY['CHANNELS']['{self.alias}']['OPTIONS'] ({redact(self.team_robot.url)})."
            )
        if kind == GONE:
            return InvalidRecipient(detail, **fields)
        if kind == REFUSED:
            return PermanentError(
                f"{detail}; check the robot's signing secret (…#secret= in the contact point) "
                "and its keyword and IP settings",
                **fields,
            )
        return PermanentError(detail, **fields)


class WeComRobotChannel(RobotChannel):
    """企业微信 group robot: ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…``.
    The key in the URL is the only credential; there is no signature."""

    provider_name = "wecom"
    provider_label = "WeCom"
    default_allowed_hosts = ("qyapi.weixin.qq.com",)
    # WeCom's global error codes (developer.work.weixin.qq.com/document/path/90313) as
    # robots answer them; the list is the well-known subset, not re-checked online.
    ERRORS: ClassVar[ErrorTable] = {
        -1: (BUSY, "WeCom is busy"),
        45009: (RATE_LIMITED, "over the robot's rate limit (20 messages a minute)"),
        45033: (RATE_LIMITED, "too many concurrent requests"),
        93000: (GONE, "the robot's key is invalid or the robot was removed"),
        40008: (BAD_MESSAGE, "invalid message type"),
        44004: (BAD_MESSAGE, "the message is empty"),
        40058: (BAD_MESSAGE, "a field of the message is invalid"),
    }

    def shape(self, card: Card) -> dict[str, Any]:
        return wecom_payload(card, self.message_type, self.link_text)


class DingTalkRobotChannel(RobotChannel):
    """钉钉 custom robot: ``https://oapi.dingtalk.com/robot/send?access_token=…``,
    signed ("加签") with ``timestamp`` (ms) and ``sign`` in the query string."""

    provider_name = "dingtalk"
    provider_label = "DingTalk"
    default_allowed_hosts = ("oapi.dingtalk.com",)
    # DingTalk documents 20 messages a minute per robot, then throttles the robot
    # for 10 minutes (open.dingtalk.com, "custom robot" guide): wait that long.
    RATE_LIMIT_WAIT = 600.0
    # From DingTalk's custom-robot error table: 310000 (security check failed:
    # "sign not match", "keywords not in content", "ip … not in whitelist"),
    # 130101 ("send too fast, exceed 20 times per minute"); the others are the
    # well-known codes of the same table, not re-checked online.
    ERRORS: ClassVar[ErrorTable] = {
        -1: (BUSY, "DingTalk is busy"),
        130101: (RATE_LIMITED, "over the robot's rate limit (20 a minute; throttled 10 minutes)"),
        410100: (RATE_LIMITED, "sending too fast: the robot is throttled"),
        310000: (REFUSED, "the robot's security check failed (signature, keyword or IP)"),
        300001: (GONE, "the robot's access_token does not exist"),
        400101: (GONE, "the robot's access_token does not exist"),
        400102: (GONE, "the robot is disabled"),
        400013: (GONE, "the group was dissolved"),
        460101: (BAD_MESSAGE, "the message is too long"),
    }

    def shape(self, card: Card) -> dict[str, Any]:
        return dingtalk_payload(card, self.message_type, self.link_text)

    def sign_url(self, url: str, secret: str) -> str:
        if not secret:
            return url
        timestamp = int(time.time() * 1000)
        parts = urlsplit(url)
        pairs = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("timestamp", "sign")]
        pairs += [("timestamp", str(timestamp)), ("sign", dingtalk_sign(secret, timestamp))]
        return urlunsplit(parts._replace(query=urlencode(pairs)))  # sign percent-encoded


class FeishuRobotChannel(RobotChannel):
    """飞书/Lark custom bot: ``https://open.feishu.cn/open-apis/bot/v2/hook/…`` (or
    ``open.larksuite.com``), signed with ``timestamp`` (s) and ``sign`` in the body."""

    provider_name = "feishu"
    provider_label = "Feishu"
    default_allowed_hosts = ("open.feishu.cn", "open.larksuite.com")
    code_field = "code"
    message_field = "msg"
    # From Feishu's custom-bot guide (open.feishu.cn, "自定义机器人使用指南"): 19021
    # ("sign match fail or timestamp is not within one hour from current time"),
    # 11232 (frequency limited; 100 a minute and 5 a second per bot); 9499, 19001,
    # 19022 and 19024 are the well-known codes of the same guide, not re-checked online.
    ERRORS: ClassVar[ErrorTable] = {
        9499: (RATE_LIMITED, "too many requests"),
        11232: (RATE_LIMITED, "over the bot's rate limit (100 a minute, 5 a second)"),
        19001: (GONE, "the bot's webhook token is invalid"),
        19021: (REFUSED, "signature mismatch, or the timestamp is more than an hour off"),
        19022: (REFUSED, "the sender's IP address is not on the bot's allow-list"),
        19024: (REFUSED, "the message lacks the bot's required keyword"),
    }

    def shape(self, card: Card) -> dict[str, Any]:
        return feishu_payload(card, self.message_type, self.link_text)

    def sign_payload(self, payload: dict[str, Any], secret: str) -> dict[str, Any]:
        timestamp = str(int(time.time()))
        return {"timestamp": timestamp, "sign": feishu_sign(secret, timestamp), **payload}
