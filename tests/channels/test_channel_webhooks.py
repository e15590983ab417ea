"""Teams, Discord and signed JSON webhooks against a local receiver.

Each runs the shared channel contract over its pooled ``requests.Session``;
then the payloads, the signature (verified by the receiver with
``channels.webhook.verify_signature``), Discord's mentions and rate limits,
and the URL policy that keeps user-supplied URLs away from private hosts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from channels.base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from channels.chat import (
    DiscordWebhookChannel,
    TeamsWebhookChannel,
    discord_payload,
    teams_card,
)
from channels.http import HttpWebhookChannel, UrlPolicy, host_allowed
from channels.webhook import SignedWebhookChannel, sign, verify_signature
from tests.channel_contract import ChannelContract, Received
from tests.json_schema import errors
from tests.peers.webhooks import WebhookPeer

SECRET = "whsec-test-5f0c1d"
ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_SCHEMA = json.loads((ROOT / "docs" / "webhook-payload.schema.json").read_text())
LOCAL = {"ALLOW_HTTP": True, "ALLOWED_HOSTS": ["127.0.0.1"], "TIMEOUT": 5}


def make(cls: type[HttpWebhookChannel], **options) -> HttpWebhookChannel:
    alias = {SignedWebhookChannel: "webhook"}.get(cls, cls.address_kind)
    if cls is SignedWebhookChannel:
        options.setdefault("SECRET", SECRET)
    return cls(alias, **{**LOCAL, **options})


# -- the contract --------------------------------------------------------------------------


class WebhookChannelPeer:
    """The contract's view of one webhook channel + the receiver."""

    def __init__(self, peer: WebhookPeer, cls: type[HttpWebhookChannel], kind: str):
        self.peer = peer
        self.cls = cls
        self.good_address = peer.add_endpoint(kind, secret=SECRET if kind == "signed" else None)
        if kind == "signed":  # a receiver that exists but says the subscription is gone
            self.rejected_address = peer.add_endpoint(kind, secret=SECRET)
            peer.respond(self.rejected_address, 410, {"error": "gone"})
        else:  # a deleted webhook
            self.rejected_address = peer.unknown_url(kind)

    def make_channel(self) -> HttpWebhookChannel:
        return make(self.cls)

    def fail_next(self, count: int) -> None:
        self.peer.fail_next(count, 503, "upstream unavailable")

    def down(self) -> None:
        self.peer.stop()

    def up(self) -> None:
        self.peer.start()

    def received(self) -> list[Received]:
        return [
            Received(to=a.url, message_id=a.message_id or a.delivery, text=json.dumps(a.body))
            for a in self.peer.accepted
        ]

    def connections(self) -> int:
        return self.peer.connections


class TestTeamsWebhookContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, webhook_peer):
        return WebhookChannelPeer(webhook_peer, TeamsWebhookChannel, "teams")


class TestDiscordWebhookContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, webhook_peer):
        return WebhookChannelPeer(webhook_peer, DiscordWebhookChannel, "discord")


class TestSignedWebhookContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, webhook_peer):
        return WebhookChannelPeer(webhook_peer, SignedWebhookChannel, "signed")


def message(to: str, **fields) -> OutgoingMessage:
    fields.setdefault("delivery_id", 501)
    fields.setdefault("channel", "webhook")
    fields.setdefault("text", "Order A1 shipped\nWith DHL.")
    return OutgoingMessage(to=to, **fields)


# -- signed webhooks ------------------------------------------------------------------------------


def test_signed_webhook_payload_headers_and_signature(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    channel = make(SignedWebhookChannel)
    before = int(time.time())
    with channel:
        result = channel.send(
            message(url, subject="Shipped", extra={"url": "https://shop.test/A1"})
        )
    [got] = webhook_peer.accepted  # the receiver verified the signature to accept it
    request = got.request
    assert result.message_id == "501" == request.header("x-notify-delivery")
    assert result.provider == "webhook"
    assert set(got.body) == set(PAYLOAD_SCHEMA["properties"])
    assert errors(got.body, PAYLOAD_SCHEMA) == []
    assert got.body["id"] == 501
    assert got.body["event"] is None  # a message about no single event (a digest)
    assert got.body["data"] == {}
    assert got.body["channel"] == "webhook"
    assert got.body["subject"] == "Shipped"
    assert got.body["text"] == "Order A1 shipped\nWith DHL."
    assert got.body["url"] == "https://shop.test/A1"
    assert got.body["sent_at"].endswith("+00:00")
    timestamp = request.header("x-notify-timestamp")
    assert before <= int(timestamp) <= time.time()
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.header("x-notify-signature") == f"v1={expected.hexdigest()}"
    assert verify_signature(SECRET, timestamp, request.body, request.header("x-notify-signature"))
    assert request.header("content-type") == "application/json"


def test_signed_webhook_carries_the_event_as_data(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    event = {
        "id": 9,
        "type": "shop.order.deleted",
        "occurred_at": "2026-01-01T12:00:00.123456+00:00",
        "actor_id": 3,
    }
    data = {"model": "shop.order", "pk": 7, "object": {"number": "A-7", "total": "12.50"}}
    with make(SignedWebhookChannel) as channel:
        channel.send(message(url, text="", extra={"event": event, "data": data, "url": ""}))
    [got] = webhook_peer.accepted
    assert errors(got.body, PAYLOAD_SCHEMA) == []
    assert got.body["event"] == event
    assert got.body["data"] == data
    assert (got.body["subject"], got.body["text"]) == ("", "")  # data-only
    assert json.loads(got.request.body) == got.body  # signed as sent, parsed as JSON


def test_the_readme_example_body_follows_the_schema():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Signed webhooks\n", 1)[1]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert errors(example, PAYLOAD_SCHEMA) == []
    assert set(example) == set(PAYLOAD_SCHEMA["properties"])


def test_the_schema_checker_finds_what_is_wrong():
    body = {
        "id": 0,
        "channel": "webhook",
        "event": {"id": 1, "type": "t", "occurred_at": "2026-01-01 12:00", "actor_id": None},
        "data": [],
        "subject": "",
        "text": "",
        "sent_at": "2026-01-01T12:00:00+00:00",
    }
    assert sorted(errors(body, PAYLOAD_SCHEMA)) == [
        "$.data: [] is not of type object",
        "$.event.occurred_at: '2026-01-01 12:00' is not a date-time",
        "$.id: 0 is less than 1",
        "$: 'url' is required",
    ]


def test_verify_signature_rejects_tampering_old_timestamps_and_other_secrets():
    body = b'{"id":1,"text":"hello"}'
    now = 1_800_000_000
    header = sign(SECRET, now, body)
    assert verify_signature(SECRET, str(now), body, header, now=now)
    assert verify_signature(SECRET.encode(), now, body.decode(), header, now=now + 299)
    assert not verify_signature(SECRET, now, b'{"id":1,"text":"hellO"}', header, now=now)
    assert not verify_signature(SECRET, now + 1, body, header, now=now)  # timestamp is signed
    assert not verify_signature(SECRET, now, body, header, now=now + 301)  # too old
    assert not verify_signature(SECRET, now, body, header, now=now - 301)  # from the future
    assert not verify_signature(SECRET, now, body, header, tolerance=10, now=now + 11)
    assert not verify_signature("another-secret", now, body, header, now=now)
    assert not verify_signature(SECRET, "not-a-number", body, header, now=now)
    assert not verify_signature(SECRET, now, body, "", now=now)
    assert not verify_signature(SECRET, now, body, header.replace("v1=", "v0="), now=now)
    # Rotation: any v1 entry may match.
    rotated = f"{sign('old-secret', now, body)}, {header}"
    assert verify_signature(SECRET, now, body, rotated, now=now)


def test_the_receiver_refuses_a_tampered_body_and_the_channel_calls_it_permanent(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret="the-receivers-secret")
    channel = make(SignedWebhookChannel)  # signs with a different secret
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(message(url))
    assert type(caught.value) is PermanentError
    assert caught.value.code == "401"
    assert webhook_peer.accepted == []
    # What the receiver got does not verify with its secret, and a replay of it
    # with the body changed does not verify with ours either.
    [request] = webhook_peer.requests
    ts, sig = request.header("x-notify-timestamp"), request.header("x-notify-signature")
    assert not verify_signature("the-receivers-secret", ts, request.body, sig)
    assert verify_signature(SECRET, ts, request.body, sig)
    assert not verify_signature(SECRET, ts, request.body.replace(b"A1", b"B2"), sig)


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (410, {}, InvalidRecipient, None),
        (404, {}, PermanentError, None),
        (400, {}, PermanentError, None),
        (422, {}, PermanentError, None),
        (429, {"Retry-After": "17"}, TransientError, 17.0),
        (503, {"Retry-After": "5"}, TransientError, 5.0),
        (500, {}, TransientError, None),
        (408, {}, TransientError, None),
        (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, PermanentError, None),
    ],
)
def test_signed_webhook_answers(webhook_peer, status, headers, kind, retry_after):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    webhook_peer.respond(url, status, {"error": "nope"}, headers)
    channel = make(SignedWebhookChannel)
    with channel, pytest.raises(Exception) as caught:
        channel.send(message(url))
    assert type(caught.value) is kind
    assert caught.value.code == str(status)
    assert caught.value.provider == "webhook"
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert len(webhook_peer.requests) == 1  # no redirect followed, nothing retried inside
    assert url.rsplit("/", 1)[-1] not in str(caught.value)  # the URL's secret part stays out


def test_a_hanging_receiver_is_a_time_out_and_retries_carry_the_same_delivery_id(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    channel = make(SignedWebhookChannel, TIMEOUT=0.3)
    webhook_peer.hang_next(1, seconds=2)
    with channel:
        with pytest.raises(TransientError) as caught:
            channel.send(message(url, delivery_id=77))
        channel.send(message(url, delivery_id=77))  # the retry
    assert caught.value.code == "timeout"
    assert url.rsplit("/", 1)[-1] not in str(caught.value)
    deliveries = [r.header("x-notify-delivery") for r in webhook_peer.requests]
    assert deliveries == ["77", "77"]  # the receiver can drop the duplicate


def test_signed_webhook_needs_a_secret():
    channel = SignedWebhookChannel("webhook", **LOCAL)
    with pytest.raises(ChannelConfigurationError, match="SECRET"):
        channel.send(message("http://127.0.0.1:9/hooks/x"))


# -- Discord -------------------------------------------------------------------------------------


def test_discord_mentions_are_disabled_and_the_message_id_is_kept(webhook_peer):
    url = webhook_peer.add_endpoint("discord")
    channel = make(DiscordWebhookChannel)
    text = "@everyone deploy finished <@123456789012345678> <@&987654321098765432>"
    with channel:
        result = channel.send(message(url, text=text, extra={"url": "https://ci.test/9"}))
    [got] = webhook_peer.accepted
    assert got.body == {
        "content": text + "\nhttps://ci.test/9",
        "allowed_mentions": {"parse": []},  # no @everyone, role or user pings
    }
    assert got.request.query["wait"] == ["true"]
    assert result.message_id == got.message_id != ""
    assert result.provider == "discord"


def test_discord_rate_limit_honours_the_json_retry_after(webhook_peer):
    url = webhook_peer.add_endpoint("discord")
    webhook_peer.ratelimit_next(1, retry_after=1.5)  # the header says 2 (rounded up)
    channel = make(DiscordWebhookChannel)
    with channel, pytest.raises(TransientError) as caught:
        channel.send(message(url))
    assert caught.value.retry_after == 1.5
    assert caught.value.code == "429"


def test_discord_unknown_webhook_is_an_invalid_recipient(webhook_peer):
    channel = make(DiscordWebhookChannel)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(webhook_peer.unknown_url("discord")))
    assert caught.value.code == "10015"
    assert "Unknown Webhook" in caught.value.message


def test_discord_payload_keeps_thread_ids_and_fits_2000_characters():
    payload = discord_payload("x" * 2500, "https://a.test/1")
    assert len(payload["content"]) == 2000
    assert payload["content"].endswith("…")
    assert discord_payload("see https://a.test/1", "https://a.test/1")["content"] == (
        "see https://a.test/1"
    )
    channel = DiscordWebhookChannel("discord")
    url = channel.target_url(
        message("https://discord.com/api/webhooks/1/tok?thread_id=42&wait=false")
    )
    assert url == "https://discord.com/api/webhooks/1/tok?thread_id=42&wait=true"


# -- Teams ----------------------------------------------------------------------------------------


def test_teams_receives_an_adaptive_card(webhook_peer):
    url = webhook_peer.add_endpoint("teams")
    channel = make(TeamsWebhookChannel)
    with channel:
        result = channel.send(message(url, delivery_id=88, extra={"url": "https://shop.test/A1"}))
    [got] = webhook_peer.accepted
    assert got.body == teams_card("Order A1 shipped\nWith DHL.", "https://shop.test/A1")
    [attachment] = got.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert [b["text"] for b in card["body"]] == ["Order A1 shipped", "With DHL."]
    assert card["body"][0]["weight"] == "Bolder"
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "View", "url": "https://shop.test/A1"}
    ]
    assert result.message_id == "88"


def test_teams_card_without_body_or_link():
    card = teams_card("Just a title")["attachments"][0]["content"]
    assert [b["text"] for b in card["body"]] == ["Just a title"]
    assert "actions" not in card


def test_teams_error_wrapped_in_a_200_is_still_an_error(webhook_peer):
    url = webhook_peer.add_endpoint("teams")
    webhook_peer.respond(
        url, 200, "Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0"
    )
    channel = make(TeamsWebhookChannel)
    with channel, pytest.raises(TransientError) as caught:
        channel.send(message(url))
    assert caught.value.code == "429"


# -- the URL policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options", "url", "why"),
    [
        (SignedWebhookChannel, {"SECRET": "s"}, "http://example.com/h", "https"),
        (SignedWebhookChannel, {"SECRET": "s"}, "https://127.0.0.1/h", "not a public address"),
        (SignedWebhookChannel, {"SECRET": "s"}, "https://10.1.2.3/h", "not a public address"),
        (SignedWebhookChannel, {"SECRET": "s"}, "https://[::1]/h", "not a public address"),
        (SignedWebhookChannel, {"SECRET": "s"}, "https://localhost/h", "not a public address"),
        (SignedWebhookChannel, {"SECRET": "s"}, "https://u:p@example.com/h", "credentials"),
        (SignedWebhookChannel, {"SECRET": "s"}, "ftp://example.com/h", "https"),
        (SignedWebhookChannel, {"SECRET": "s"}, "not a url", "https"),
        (DiscordWebhookChannel, {}, "https://127.0.0.1/api/webhooks/1/x", "is not one of"),
        (
            DiscordWebhookChannel,
            {},
            "https://discord.com.evil.test/api/webhooks/1/x",
            "is not one of",
        ),
        (TeamsWebhookChannel, {}, "https://evil.test/webhookb2/x", "is not one of"),
        (
            TeamsWebhookChannel,
            {"ALLOWED_HOSTS": ["127.0.0.1"]},
            "http://127.0.0.1/teams/x",
            "https",
        ),
    ],
)
def test_urls_the_channel_must_not_post_to(webhook_peer, cls, options, url, why):
    channel = cls("x", **options)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(url))
    assert caught.value.code == "url_refused"
    assert why in caught.value.message
    assert webhook_peer.requests == []


def test_provider_hosts_and_their_subdomains_are_allowed():
    assert host_allowed("discord.com", ["discord.com"])
    assert host_allowed("canary.discord.com", ["discord.com"])
    assert host_allowed("contoso.webhook.office.com", TeamsWebhookChannel.default_allowed_hosts)
    assert host_allowed("prod-12.westus.logic.azure.com", TeamsWebhookChannel.default_allowed_hosts)
    assert not host_allowed("notdiscord.com", ["discord.com"])
    assert not host_allowed("discord.com.evil.test", ["discord.com"])
    policy = UrlPolicy(allowed_hosts=("discord.com",))
    assert policy.check(" https://discord.com/api/webhooks/1/x ", "discord") == (
        "https://discord.com/api/webhooks/1/x"
    )


# -- settings ----------------------------------------------------------------------------------


def test_chat_and_webhook_aliases_are_the_sandbox_unless_credentials_are_set(tmp_path):
    from notify.registry import describe

    assert describe("chat") == ("slack", "chat")
    assert describe("webhook") == ("webhook", "webhook")  # data-only rules work in the sandbox
    script = (
        "import json, notify.project.settings as s; "
        "print(json.dumps({a: s.NOTIFY['CHANNELS'][a] for a in ('chat', 'webhook')}))"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NOTIFY_VAR_DIR": str(tmp_path),
        "SLACK_BOT_TOKEN": "xoxb-from-env",
        "NOTIFY_WEBHOOK_SECRET": "from-env",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        capture_output=True,
        text=True,
        check=True,
    )
    aliases = json.loads(out.stdout)
    assert aliases["chat"] == {
        "BACKEND": "channels.chat.SlackChannel",
        "OPTIONS": {"BOT_TOKEN": "xoxb-from-env"},
    }
    assert aliases["webhook"] == {
        "BACKEND": "channels.webhook.SignedWebhookChannel",
        "OPTIONS": {"SECRET": "from-env"},
    }
