"""Chat channels: Slack (Web API and incoming webhooks), Microsoft Teams, Discord.

All of them send the rendered ``chat`` part: a first line that says what
happened and an optional body, in Slack-style mrkdwn. Each channel shapes it
for its service with a small pure function (:func:`slack_blocks`,
:func:`teams_card`, :func:`discord_payload`) and sends it; mentions that would
ping a whole channel (``<!channel>``, ``@everyone``) are never sent from
templates.

``SlackChannel`` (address kind ``slack``: a member id such as ``U0123ABCD``)
    ``chat.postMessage`` through slack-sdk's ``WebClient``, one per batch.
    Options: ``BOT_TOKEN`` (required; ``xoxb-…`` with ``chat:write``),
    ``BASE_URL`` (default Slack's), ``TIMEOUT`` (seconds, default 10),
    ``PACE`` (seconds between two messages to one Slack channel or member,
    default 1: Slack allows about one a second per channel), and the circuit
    breaker's ``FAILURE_RATE``, ``MINIMUM_CALLS``, ``WINDOW``, ``COOL_DOWN``, ``CACHE``
    (:mod:`channels.breaker`, one breaker for the Web API). The SDK's own
    retry handlers are off: our backoff decides when to try again. A message
    that would come too soon after the last one to its channel is not sent
    but rescheduled (:class:`channels.ratelimit.RateLimited`); Slack's 429
    pauses that channel for its ``Retry-After`` and raises
    :class:`channels.base.ProviderRateLimited`: neither counts as an attempt
    (the 429s up to ``NOTIFY["MAX_FREE_RATE_LIMITS"]`` in a row).
    slack-sdk's synchronous client opens one HTTPS connection per call
    (``urllib``); Slack's per-channel rate limit, not the handshake, bounds
    the throughput.
``SlackWebhookChannel`` (``slack_webhook``: an incoming-webhook URL)
    slack-sdk's ``WebhookClient``; paced per webhook (``PACE``) and behind a
    breaker per host like the Web API.
``TeamsWebhookChannel`` (``teams``: a Teams Workflows or connector URL)
    an Adaptive Card, over :class:`channels.http.HttpWebhookChannel`.
``DiscordWebhookChannel`` (``discord``: a Discord webhook URL)
    ``{"content", "allowed_mentions": {"parse": []}}``, over the same base.

The webhook channels take the URL options of :mod:`channels.http`
(``ALLOW_HTTP``, ``ALLOWED_HOSTS``; by default https to the provider's own
hosts only) and ``TIMEOUT``.
"""

from __future__ import annotations

import hashlib
import http.client
import re
from typing import Any, ClassVar
from urllib.error import URLError
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from .base import (
    Channel,
    ChannelConfigurationError,
    ChannelError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    ProviderRateLimited,
    SendResult,
    TransientError,
)
from .breaker import BREAKER_OPTIONS, CircuitBreaker, guarded, number
from .http import (
    HTTP_OPTIONS,
    HttpWebhookChannel,
    UrlPolicy,
    parse_retry_after,
    redact,
    without_path,
)
from .ratelimit import Pacer

SLACK_PACE = 1.0  # seconds between two messages to one channel: Slack's documented rate
SLACK_SECTION_LIMIT = 3000  # characters of a section block's text
SLACK_MAX_BLOCKS = 50
DISCORD_CONTENT_LIMIT = 2000
MEMBER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
# Slack's special mentions: <!channel>, <!here>, <!everyone>, <!subteam^ID|@team>.
SLACK_BROADCAST = re.compile(r"<!(?=(?:channel|here|everyone|subteam\^)[^>]*>)")


def split_first_line(text: str) -> tuple[str, str]:
    head, _, rest = text.strip().partition("\n")
    return head.strip(), rest.strip()


def chunks(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line ends when possible."""
    out: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n")
    if text.strip():
        out.append(text)
    return out


def web_url(url: Any) -> str:
    """``url`` if it is an absolute http(s) URL fit for a button, else ""."""
    if isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) <= 3000:
        return url
    return ""


# -- Slack -----------------------------------------------------------------------------


def quiet_slack_mentions(text: str) -> str:
    """Turn ``<!channel>``-style broadcasts into literal text (``&lt;!channel>``)."""
    return SLACK_BROADCAST.sub("&lt;!", text)


def slack_blocks(text: str, url: str = "") -> list[dict[str, Any]]:
    """Block Kit for a rendered chat message: the first line as one section, the
    rest as more sections (each at most 3,000 characters), and a "View" button
    when the message links somewhere."""
    head, rest = split_first_line(text)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
        for part in (head, rest)
        for piece in chunks(part, SLACK_SECTION_LIMIT)
    ]
    blocks = blocks[: SLACK_MAX_BLOCKS - 1]
    link = web_url(url)
    if link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "View"},
                        "url": link,
                        "action_id": "notify_view",
                    }
                ],
            }
        )
    return blocks


def token_problem(what: str) -> tuple[type[ChannelError], str]:
    """A configuration problem, not the recipient's: permanent, and says what to fix."""
    return PermanentError, f"configuration: {what}; check the BOT_TOKEN option (SLACK_BOT_TOKEN)"


def slack_error(
    known: tuple[type[ChannelError], str] | None,
    code: str,
    status: int,
    headers: Any,
    *,
    provider: str,
    not_found: type[ChannelError] = PermanentError,
    context: str = "",
) -> ChannelError:
    """The error for a Slack answer: ``known`` from a channel's ``ERRORS``, else
    by HTTP status (429, 408 and 5xx transient; 404/410 ``not_found``)."""
    if known is not None:
        cls, reason = known
    elif status == 429:
        cls, reason = ProviderRateLimited, "rate limited by Slack"
    elif status == 408 or status >= 500:
        cls, reason = TransientError, f"Slack answered HTTP {status}"
    elif status in (404, 410):
        cls, reason = not_found, "not found"
    else:
        cls, reason = PermanentError, "Slack refused the message"
    detail = f"{reason} ({code or 'no error code'}, HTTP {status}{context})"
    fields: dict[str, Any] = {
        "code": code if re.fullmatch(r"[a-z_]{1,50}", code) else str(status),
        "provider": provider,
        "response": {"status": status, "error": code[:500]},
    }
    if issubclass(cls, TransientError):
        fields["retry_after"] = parse_retry_after(header(headers, "Retry-After"))
    return cls(detail, **fields)


class SlackChannel(Channel):
    """A direct message to a Slack member through ``chat.postMessage``."""

    address_kind = "slack"
    message_format = "chat"
    provider_name = "slack"
    accepted_options = frozenset({"BOT_TOKEN", "BASE_URL", "TIMEOUT", "PACE"}) | BREAKER_OPTIONS

    # Slack's error codes -> (error class, what it means). Codes not listed are
    # permanent, unless the HTTP status says 429 or 5xx.
    ERRORS: ClassVar[dict[str, tuple[type[ChannelError], str]]] = {
        "ratelimited": (ProviderRateLimited, "rate limited by Slack"),
        "internal_error": (TransientError, "Slack had an internal error"),
        "fatal_error": (TransientError, "Slack had an internal error"),
        "service_unavailable": (TransientError, "Slack is unavailable"),
        "request_timeout": (TransientError, "Slack timed out"),
        "invalid_auth": token_problem("Slack rejected the bot token"),
        "not_authed": token_problem("no bot token was sent"),
        "account_inactive": token_problem("the token's app or user is deactivated"),
        "token_revoked": token_problem("the bot token was revoked"),
        "token_expired": token_problem("the bot token expired"),
        "missing_scope": token_problem("the bot token lacks the chat:write scope"),
        "channel_not_found": (InvalidRecipient, "no such Slack channel or member, or it is hidden"),
        "user_not_found": (InvalidRecipient, "no such Slack member"),
        "is_archived": (InvalidRecipient, "the conversation is archived"),
        "cannot_dm_bot": (InvalidRecipient, "the member is a bot: bots get no direct messages"),
        "not_in_channel": (InvalidRecipient, "the app is not in that channel"),
        "user_disabled": (InvalidRecipient, "the member's account is deactivated"),
        "msg_too_long": (PermanentError, "the message is too long"),
        "no_text": (PermanentError, "the message is empty"),
        "invalid_blocks": (PermanentError, "Slack refused the message's blocks"),
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.token: str = (options.get("BOT_TOKEN") or "").strip()
        self.base_url: str = options.get("BASE_URL") or WebClient.BASE_URL
        self.timeout = float(options.get("TIMEOUT", 10))
        self.client: WebClient | None = None
        self.pacer, self.breaker = pacer_and_breaker(self, f"{self.alias}:api")

    def check_configuration(self) -> None:
        if not self.token:
            raise ChannelConfigurationError(
                f"Slack channel '{self.alias}': set NOTIFY['CHANNELS']['{self.alias}']"
                "['OPTIONS']['BOT_TOKEN'] (env SLACK_BOT_TOKEN) to a bot token (xoxb-…)."
            )

    def open(self) -> None:
        if not self.token:
            raise ChannelConfigurationError(
                f"Slack channel '{self.alias}': set NOTIFY['CHANNELS']['{self.alias}']"
                "['OPTIONS']['BOT_TOKEN'] (env SLACK_BOT_TOKEN) to a bot token (xoxb-…)."
            )
        if self.client is None:
            self.client = WebClient(
                token=self.token,
                base_url=self.base_url,
                timeout=self.timeout,  # type: ignore[arg-type]
                retry_handlers=[],  # no silent sleeping inside the SDK
            )

    def close(self) -> None:
        self.client = None

    def send(self, message: OutgoingMessage) -> SendResult:
        member = message.to.strip()
        if not MEMBER_ID.fullmatch(member):
            raise InvalidRecipient(
                f"not a Slack member id: {member!r}",
                code="invalid_address",
                provider=self.provider_name,
            )
        if self.client is None:
            self.open()
        self.pacer.acquire(member, self.provider_name)
        try:
            return guarded(self.breaker, lambda: self.post(member, message), self.provider_name)
        except ProviderRateLimited as exc:
            self.pacer.pause(member, exc.retry_after)
            raise

    def post(self, member: str, message: OutgoingMessage) -> SendResult:
        assert self.client is not None
        text = quiet_slack_mentions(message.text)
        try:
            response = self.client.chat_postMessage(
                channel=member,
                text=text,  # the notification and screen-reader fallback
                blocks=slack_blocks(text, message.extra.get("url", "")),
                link_names=False,
            )
        except SlackApiError as exc:
            raise self.classify(exc) from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, time-outs, resets
            raise connection_error(exc, self.timeout, self.provider_name) from exc
        except SlackClientError as exc:
            raise PermanentError(f"slack-sdk: {exc}", provider=self.provider_name) from exc
        channel, ts = response.get("channel", ""), response.get("ts", "")
        return SendResult(
            provider=self.provider_name,
            message_id=f"{channel}:{ts}",
            response={"channel": channel, "ts": ts},
        )

    def classify(self, exc: SlackApiError) -> ChannelError:
        """Map Slack's answer to the error family, through ``ERRORS``."""
        response = exc.response
        data = response.data if isinstance(getattr(response, "data", None), dict) else {}
        error = str(data.get("error") or "")
        status = int(getattr(response, "status_code", 0) or 0)
        headers = getattr(response, "headers", {})
        return slack_error(
            self.ERRORS.get(error), error, status, headers, provider=self.provider_name
        )


def pacer_and_breaker(channel: Channel, breaker_name: str) -> tuple[Pacer, CircuitBreaker | None]:
    """A Slack channel's pacing per destination and its breaker, from its options."""
    where = f"Slack channel '{channel.alias}'"
    pace = number(where, channel.options, "PACE", SLACK_PACE, float, 0)
    cache_alias = channel.options.get("CACHE", "default")
    pacer = Pacer(f"slack:{channel.alias}", pace, cache_alias=cache_alias)
    return pacer, CircuitBreaker.from_options(breaker_name, channel.options, where)


def header(headers: Any, name: str) -> Any:
    """A header from a plain dict whatever its case (slack-sdk keeps the server's)."""
    try:
        items = headers.items()
    except AttributeError:
        return None
    lowered = name.lower()
    for key, value in items:
        if str(key).lower() == lowered:
            return value[0] if isinstance(value, list) and value else value
    return None


def connection_error(exc: BaseException, timeout: float, provider: str) -> TransientError:
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, TimeoutError):
        return TransientError(f"no answer within {timeout:g}s", code="timeout", provider=provider)
    return TransientError(f"cannot reach Slack: {reason}", code="connection", provider=provider)


class SlackWebhookChannel(Channel):
    """A message to the channel an incoming webhook was made for."""

    address_kind = "slack_webhook"
    message_format = "chat"
    provider_name = "slack_webhook"
    accepted_options = HTTP_OPTIONS | BREAKER_OPTIONS | {"PACE"}
    default_allowed_hosts: ClassVar[tuple[str, ...]] = ("hooks.slack.com",)

    # What Slack answers (the body is a plain-text code) -> (class, meaning).
    ERRORS: ClassVar[dict[str, tuple[type[ChannelError], str]]] = {
        "no_service": (InvalidRecipient, "the webhook was removed or never existed"),
        "no_active_hooks": (InvalidRecipient, "the webhook is disabled"),
        "invalid_token": (InvalidRecipient, "the webhook's token is invalid"),
        "channel_not_found": (InvalidRecipient, "the webhook's channel no longer exists"),
        "channel_is_archived": (InvalidRecipient, "the webhook's channel is archived"),
        "team_disabled": (InvalidRecipient, "the Slack workspace is disabled"),
        "action_prohibited": (PermanentError, "a workspace admin restricted posting"),
        "posting_to_general_channel_denied": (PermanentError, "posting to #general is restricted"),
        "invalid_payload": (PermanentError, "Slack refused the payload"),
        "no_text": (PermanentError, "the message is empty"),
        "rollup_error": (TransientError, "Slack had an internal error"),
    }

    def __init__(self, alias: str, **options: Any):
        super().__init__(alias, **options)
        self.timeout = float(options.get("TIMEOUT", 10))
        self.url_policy = UrlPolicy.from_options(options, self.default_allowed_hosts)
        self.pacer, self.breaker = pacer_and_breaker(self, f"{self.alias}:hooks")

    def send(self, message: OutgoingMessage) -> SendResult:
        url = self.url_policy.check(message.to, self.provider_name)
        webhook = hashlib.sha256(url.encode()).hexdigest()[:24]  # one per Slack channel
        self.pacer.acquire(webhook, self.provider_name)
        try:
            return guarded(self.breaker, lambda: self.post(url, message), self.provider_name)
        except ProviderRateLimited as exc:
            self.pacer.pause(webhook, exc.retry_after)
            raise

    def post(self, url: str, message: OutgoingMessage) -> SendResult:
        # One client per URL; slack-sdk posts through urllib, one connection per call.
        client = WebhookClient(url, timeout=self.timeout, retry_handlers=[])  # type: ignore[arg-type]
        text = quiet_slack_mentions(message.text)
        body = {"text": text, "blocks": slack_blocks(text, message.extra.get("url", ""))}
        try:
            response = client.send_dict(body, headers={"X-Notify-Delivery": message.delivery_ref})
        except (OSError, http.client.HTTPException) as exc:
            raise connection_error(exc, self.timeout, self.provider_name) from exc
        if response.status_code == 200:
            return SendResult(
                provider=self.provider_name,
                message_id=message.delivery_ref,  # incoming webhooks return no id
                response={"status": 200, "body": (response.body or "")[:200]},
            )
        raise self.classify(response.status_code, response.body or "", response.headers or {}, url)

    def classify(self, status: int, body: str, headers: Any, url: str) -> ChannelError:
        code = without_path(body.strip()[:200], url)  # Slack answers with a bare code
        return slack_error(
            self.ERRORS.get(code),
            code,
            status,
            headers,
            provider=self.provider_name,
            not_found=InvalidRecipient,
            context=f", {redact(url)}",
        )


# -- Microsoft Teams ------------------------------------------------------------------


def teams_card(text: str, url: str = "") -> dict[str, Any]:
    """A Teams message carrying one Adaptive Card: the first line as a bold
    heading, the rest as wrapped text, and a "View" action when there is a link.
    Accepted by Teams Workflows webhooks and by the older connectors."""
    head, rest = split_first_line(text)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": head, "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    if rest:
        body.append({"type": "TextBlock", "text": rest, "wrap": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    link = web_url(url)
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "View", "url": link}]
    return {
        "type": "message",
        "summary": head[:200],
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


class TeamsWebhookChannel(HttpWebhookChannel):
    address_kind = "teams"
    provider_name = "teams"
    default_allowed_hosts = ("webhook.office.com", "logic.azure.com", "api.powerplatform.com")
    # Connectors answer some failures with "200 Microsoft Teams endpoint returned HTTP error 429 …".
    WRAPPED_ERROR = re.compile(r"returned HTTP error (\d{3})")

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return teams_card(message.text, message.extra.get("url", ""))

    def status_of(self, response: requests.Response) -> int:
        wrapped = self.WRAPPED_ERROR.search(response.text[:500]) if response.ok else None
        return int(wrapped.group(1)) if wrapped else response.status_code


# -- Discord -----------------------------------------------------------------------------


def discord_payload(text: str, url: str = "") -> dict[str, Any]:
    """The message as Discord ``content`` (at most 2,000 characters), the link
    appended when the text does not carry it, and every mention disabled."""
    content = text.strip()
    link = web_url(url)
    if link and link not in content:
        content = f"{content}\n{link}" if content else link
    if len(content) > DISCORD_CONTENT_LIMIT:
        content = content[: DISCORD_CONTENT_LIMIT - 1] + "…"
    return {"content": content, "allowed_mentions": {"parse": []}}


class DiscordWebhookChannel(HttpWebhookChannel):
    address_kind = "discord"
    provider_name = "discord"
    default_allowed_hosts = ("discord.com", "discordapp.com")

    # Discord's JSON error codes -> (class, meaning); the HTTP status decides otherwise.
    ERRORS: ClassVar[dict[int, tuple[type[ChannelError], str]]] = {
        10015: (InvalidRecipient, "Unknown Webhook: it was deleted"),
        50027: (InvalidRecipient, "Invalid Webhook Token"),
        10003: (InvalidRecipient, "Unknown Channel"),
        50006: (PermanentError, "Cannot send an empty message"),
        50035: (PermanentError, "Invalid Form Body"),
    }

    def target_url(self, message: OutgoingMessage) -> str:
        """``?wait=true``: Discord then answers with the message, and its id."""
        parts = urlsplit(super().target_url(message))
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "wait"] + [("wait", "true")]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return discord_payload(message.text, message.extra.get("url", ""))

    def message_id(self, response: requests.Response, message: OutgoingMessage) -> str:
        return str(self._json(response).get("id") or message.delivery_id)

    def response_record(self, response: requests.Response) -> dict[str, Any]:
        data = self._json(response)
        if data:
            return {
                "status": response.status_code,
                "id": data.get("id"),
                "code": data.get("code"),
                "message": data.get("message"),
            }
        return super().response_record(response)

    def retry_after(self, response: requests.Response) -> float | None:
        """Discord's JSON ``retry_after`` (seconds, fractional) is more precise."""
        seconds = parse_retry_after(self._json(response).get("retry_after"))
        return seconds if seconds is not None else super().retry_after(response)

    def error_code(self, response: requests.Response, status: int) -> str:
        code = self._json(response).get("code")
        return str(code) if isinstance(code, int) and code else str(status)

    def error_for(self, response: requests.Response, status: int) -> ChannelError:
        known = self.ERRORS.get(self._json(response).get("code"))  # type: ignore[arg-type]
        if known is None:
            return super().error_for(response, status)
        cls, reason = known
        return cls(
            f"{reason} (HTTP {status})",
            code=self.error_code(response, status),
            provider=self.provider_name,
            response=self.response_record(response),
        )

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
