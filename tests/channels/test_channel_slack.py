"""The Slack channels through the real slack-sdk against a local Slack peer.

``SlackChannel`` (Web API, ``chat.postMessage``) and ``SlackWebhookChannel``
(incoming webhooks) run the shared channel contract; then Block Kit, Slack's
error codes, rate limits with ``Retry-After`` end to end through the worker.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from channels.base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    ProviderRateLimited,
    TransientError,
)
from channels.chat import (
    SlackChannel,
    SlackWebhookChannel,
    chunks,
    quiet_slack_mentions,
    slack_blocks,
)
from channels.ratelimit import RateLimited
from notify import trigger
from notify.models import ContactPoint, Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.channel_contract import ChannelContract, Received, outgoing
from tests.peers.slack import BOT_TOKEN, SlackPeer

ALICE = "U0ALICE01"
NOBODY = "U0NOBODY1"


def slack_channel(peer: SlackPeer, **options) -> SlackChannel:
    """Unpaced (``PACE`` 0) unless the test paces: the contract sends to one member
    back to back; pacing has its own tests."""
    return SlackChannel(
        "chat",
        **{"BOT_TOKEN": BOT_TOKEN, "BASE_URL": peer.api_url, "TIMEOUT": 5, "PACE": 0, **options},
    )


def webhook_channel(**options) -> SlackWebhookChannel:
    return SlackWebhookChannel(
        "slack_webhook",
        **{"ALLOW_HTTP": True, "ALLOWED_HOSTS": ["127.0.0.1"], "TIMEOUT": 5, "PACE": 0, **options},
    )


# -- the contract --------------------------------------------------------------------------


class SlackApiChannelPeer:
    """The contract's view of ``SlackChannel`` + the Slack peer."""

    good_address = ALICE
    rejected_address = NOBODY
    # slack-sdk's WebClient posts through urllib: one connection per call.
    shares_connections = False

    def __init__(self, slack: SlackPeer):
        self.slack = slack
        slack.error_for(NOBODY, "user_not_found")

    def make_channel(self) -> SlackChannel:
        return slack_channel(self.slack)

    def fail_next(self, count: int) -> None:
        self.slack.fail_next(count, 503, "<html>Service Unavailable</html>")

    def down(self) -> None:
        self.slack.stop()

    def up(self) -> None:
        self.slack.start()

    def received(self) -> list[Received]:
        return [
            Received(to=m.channel, message_id=f"{m.dm_channel}:{m.ts}", text=m.text)
            for m in self.slack.messages
        ]

    def connections(self) -> int:
        return self.slack.connections


class SlackWebhookChannelPeer:
    """The contract's view of ``SlackWebhookChannel`` + the peer's incoming webhooks."""

    shares_connections = False  # slack-sdk's WebhookClient: urllib too

    def __init__(self, slack: SlackPeer):
        self.slack = slack
        self.good_address = slack.add_webhook()
        self.rejected_address = f"{slack.base_url}/services/T0TEAM/B0GONE/abcdefabcdef"

    def make_channel(self) -> SlackWebhookChannel:
        return webhook_channel()

    def fail_next(self, count: int) -> None:
        self.slack.fail_next(count, 500, "rollup_error")

    def down(self) -> None:
        self.slack.stop()

    def up(self) -> None:
        self.slack.start()

    def received(self) -> list[Received]:
        return [
            Received(
                to=p.url,
                message_id=p.request.header("x-notify-delivery"),
                text=p.body["text"],
            )
            for p in self.slack.webhook_posts
        ]

    def connections(self) -> int:
        return self.slack.connections


class TestSlackChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, slack_peer):
        return SlackApiChannelPeer(slack_peer)


class TestSlackWebhookChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, slack_peer):
        return SlackWebhookChannelPeer(slack_peer)


# -- Block Kit, a pure function ---------------------------------------------------------------


def test_blocks_first_line_then_the_rest_then_a_view_button():
    blocks = slack_blocks(
        ":package: Order *A1* has shipped\n\nWith DHL.\nArrives Tuesday.", "https://x.test/o/A1"
    )
    assert blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": ":package: Order *A1* has shipped"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "With DHL.\nArrives Tuesday."}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "View"},
                    "url": "https://x.test/o/A1",
                    "action_id": "notify_view",
                }
            ],
        },
    ]


def test_blocks_one_line_no_url():
    assert slack_blocks("  Just this  \n") == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Just this"}}
    ]


@pytest.mark.parametrize("url", ["", None, "javascript:alert(1)", "/relative", "x" * 10])
def test_blocks_without_a_usable_url_have_no_button(url):
    assert [b["type"] for b in slack_blocks("Title\nBody", url)] == ["section", "section"]


def test_long_text_is_split_into_sections_within_slacks_limit():
    body = "\n".join(f"line {i} " + "x" * 90 for i in range(100))  # ~10,000 characters
    blocks = slack_blocks("Title\n" + body)
    texts = [b["text"]["text"] for b in blocks]
    assert texts[0] == "Title"
    assert all(0 < len(t) <= 3000 for t in texts)
    assert "\n".join(texts[1:]) == body  # cut at line ends, nothing lost
    assert len(blocks) <= 50


def test_chunks_cut_a_line_without_breaks_at_the_limit():
    assert chunks("a" * 7000, 3000) == ["a" * 3000, "a" * 3000, "a" * 1000]


def test_broadcast_mentions_are_made_literal():
    text = (
        "Hi <!channel> and <!here|here>, <!subteam^S123|@ops>; <@U0ALICE01> <https://x.test|link>"
    )
    assert quiet_slack_mentions(text) == (
        "Hi &lt;!channel> and &lt;!here|here>, &lt;!subteam^S123|@ops>; "
        "<@U0ALICE01> <https://x.test|link>"
    )


# -- Slack at the peer ----------------------------------------------------------------------------


def test_message_arrives_with_blocks_and_the_text_fallback(slack_peer):
    channel = slack_channel(slack_peer)
    message = OutgoingMessage(
        delivery_id=7,
        channel="chat",
        to=ALICE,
        text="Order *A1* shipped\nWith DHL <!channel>",
        extra={"url": "https://shop.test/orders/A1"},
    )
    with channel:
        result = channel.send(message)
    [received] = slack_peer.messages
    assert received.channel == ALICE
    assert result.message_id == f"D0ALICE01:{received.ts}"
    assert result.response == {"channel": "D0ALICE01", "ts": received.ts}
    assert received.text == "Order *A1* shipped\nWith DHL &lt;!channel>"
    assert received.blocks == slack_blocks(received.text, "https://shop.test/orders/A1")
    request = received.request
    assert request.header("authorization") == f"Bearer {BOT_TOKEN}"
    assert request.header("content-type").startswith("application/json")
    assert request.json()["link_names"] is False


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        ("channel_not_found", InvalidRecipient, "no such Slack channel or member"),
        ("user_not_found", InvalidRecipient, "no such Slack member"),
        ("is_archived", InvalidRecipient, "archived"),
        ("cannot_dm_bot", InvalidRecipient, "bot"),
        ("msg_too_long", PermanentError, "too long"),
        ("some_new_error", PermanentError, "Slack refused"),
    ],
)
def test_slack_error_codes_are_permanent_with_the_reason(slack_peer, error, kind, words):
    slack_peer.error_for(ALICE, error)
    channel = slack_channel(slack_peer)
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(outgoing(channel, ALICE))
    assert type(caught.value) is kind
    assert caught.value.code == error
    assert words in caught.value.message
    assert caught.value.provider == "slack"
    assert not caught.value.retryable


@pytest.mark.parametrize("token", ["xoxb-wrong", "  "])
def test_a_bad_token_is_a_permanent_configuration_error(slack_peer, token):
    channel = slack_channel(slack_peer, BOT_TOKEN=token)
    if not token.strip():
        with pytest.raises(ChannelConfigurationError, match="BOT_TOKEN"):
            channel.send(outgoing(channel, ALICE))
        return
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(outgoing(channel, ALICE))
    assert type(caught.value) is PermanentError  # not the recipient's fault
    assert caught.value.code == "invalid_auth"
    assert "configuration" in caught.value.message
    assert "BOT_TOKEN" in caught.value.message
    assert slack_peer.messages == []


def test_ratelimited_is_transient_with_retry_after_and_no_retry_inside_the_sdk(slack_peer):
    slack_peer.ratelimit_next(1, retry_after=2)
    channel = slack_channel(slack_peer)
    with channel:
        with pytest.raises(TransientError) as caught:
            channel.send(outgoing(channel, ALICE))
        assert len(slack_peer.requests) == 1  # the SDK did not sleep and retry
        # Retry-After pauses that member's channel for every worker: no request.
        with pytest.raises(RateLimited) as paused:
            channel.send(outgoing(channel, ALICE))
        assert len(slack_peer.requests) == 1
        cache.clear()  # as if the 2 s had passed
        channel.send(outgoing(channel, ALICE))
    assert isinstance(caught.value, ProviderRateLimited)
    assert caught.value.code == "ratelimited"
    assert caught.value.retry_after == 2.0
    assert 1.5 < paused.value.retry_after <= 2.0
    assert len(slack_peer.messages) == 1


def test_server_error_and_hang_are_transient(slack_peer):
    channel = slack_channel(slack_peer, TIMEOUT=0.3)
    with channel:
        slack_peer.fail_next(1, 500, "<html>oops</html>")
        with pytest.raises(TransientError) as server_error:
            channel.send(outgoing(channel, ALICE))
        slack_peer.hang_next(1, seconds=2)
        with pytest.raises(TransientError) as hang:
            channel.send(outgoing(channel, ALICE))
    assert server_error.value.code == "500"
    assert hang.value.code == "timeout"
    assert "0.3s" in hang.value.message


@pytest.mark.parametrize("address", ["", "alice", "#general", "u0alice01", "U0ALICE01; DROP"])
def test_a_malformed_member_id_is_refused_before_calling_slack(slack_peer, address):
    channel = slack_channel(slack_peer)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(outgoing(channel, address))
    assert caught.value.code == "invalid_address"
    assert slack_peer.requests == []


# -- incoming webhooks ------------------------------------------------------------------------------


def test_webhook_posts_blocks_and_text(slack_peer):
    url = slack_peer.add_webhook()
    channel = webhook_channel()
    message = OutgoingMessage(
        delivery_id=41,
        channel="slack_webhook",
        to=url,
        text="Deployed\nAll green",
        extra={"url": "https://ci.test/1"},
    )
    result = channel.send(message)
    [post] = slack_peer.webhook_posts
    assert post.body == {
        "text": "Deployed\nAll green",
        "blocks": slack_blocks("Deployed\nAll green", "https://ci.test/1"),
    }
    assert result.message_id == "41" == post.request.header("x-notify-delivery")
    assert result.provider == "slack_webhook"


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (404, "no_service", InvalidRecipient, "no_service"),
        (404, "channel_not_found", InvalidRecipient, "channel_not_found"),
        (403, "invalid_token", InvalidRecipient, "invalid_token"),
        (410, "channel_is_archived", InvalidRecipient, "channel_is_archived"),
        (400, "invalid_payload", PermanentError, "invalid_payload"),
        (403, "action_prohibited", PermanentError, "action_prohibited"),
        (500, "rollup_error", TransientError, "rollup_error"),
        (502, "<html>bad gateway</html>", TransientError, "502"),
    ],
)
def test_webhook_errors(slack_peer, status, body, kind, code):
    url = slack_peer.add_webhook()
    slack_peer.webhook_error(url, status, body)
    channel = webhook_channel()
    with pytest.raises(Exception) as caught:
        channel.send(outgoing(channel, url))
    assert type(caught.value) is kind
    assert caught.value.code == code
    assert url.rsplit("/", 1)[-1] not in str(caught.value)  # the webhook's secret stays out


def test_webhook_rate_limit_is_transient_with_retry_after(slack_peer):
    url = slack_peer.add_webhook()
    slack_peer.ratelimit_next(1, retry_after=30)
    channel = webhook_channel()
    with pytest.raises(TransientError) as caught:
        channel.send(outgoing(channel, url))
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(
    ("options", "url"),
    [
        ({}, "https://hooks.slack.com.evil.test/services/T/B/x"),  # not Slack's host
        ({}, "https://127.0.0.1/services/T/B/x"),
        ({}, "http://hooks.slack.com/services/T/B/x"),  # not https
        ({"ALLOW_HTTP": True}, "file:///etc/passwd"),
    ],
)
def test_webhook_urls_outside_slack_are_refused_by_default(options, url):
    channel = SlackWebhookChannel("slack_webhook", **options)
    with pytest.raises(InvalidRecipient) as caught:
        channel.send(outgoing(channel, url))
    assert caught.value.code == "url_refused"


# -- end to end: a rule, the worker, the Slack peer ------------------------------------------------------


@pytest.fixture
def slack_chat(settings, slack_peer):
    """The "chat" alias sends through SlackChannel to the peer; Retry-After decides."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "chat": {
                "BACKEND": "channels.chat.SlackChannel",
                "OPTIONS": {"BOT_TOKEN": BOT_TOKEN, "BASE_URL": slack_peer.api_url, "TIMEOUT": 5},
            },
        },
        # A backoff far below the provider's Retry-After, so the test sees which one won.
        "RETRY_BASE_DELAY": 0.01,
        "RETRY_JITTER": 0.0,
    }
    return slack_peer


@pytest.fixture
def alice_on_slack(make_user, make_rule, slack_chat):
    alice = make_user("alice", first_name="Alice")
    ContactPoint.objects.create(
        user=alice, kind=ContactPoint.Kind.SLACK, address=ALICE, verified_at=timezone.now()
    )
    make_rule(channels=["chat"])

    def send():
        return trigger(
            "order.shipped", {"order_id": "A1", "url": "https://shop.test/A1"}, recipients=[alice]
        )

    return alice, send


def test_ratelimited_end_to_end_waits_at_least_retry_after(slack_chat, alice_on_slack):
    _alice, send = alice_on_slack
    slack_chat.ratelimit_next(1, retry_after=2)
    send()
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.channel == "chat"
    assert delivery.status == Status.PENDING
    assert delivery.attempts == 0  # a 429 is on record but uses no attempt
    assert delivery.error_code == "ratelimited"
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.TRANSIENT
    assert delivery.next_attempt_at >= attempt.started_at + timedelta(seconds=2)
    assert delivery.next_attempt_at <= attempt.finished_at + timedelta(seconds=3)
    assert run_until_idle() == 0  # not due yet
    assert slack_chat.messages == []

    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    cache.clear()  # Slack's Retry-After paused this member's channel for 2 s
    run_until_idle()
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert delivery.attempts == 1
    [message] = slack_chat.messages
    assert delivery.provider == "slack"
    assert delivery.provider_message_id == f"D0ALICE01:{message.ts}"
    assert message.text.startswith(":package: Order *A1* has shipped")
    assert message.blocks[-1]["elements"][0]["url"] == "https://shop.test/A1"


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        ("token", "invalid_auth", "BOT_TOKEN"),
        ("channel_not_found", "channel_not_found", "no such Slack channel or member"),
        ("user_not_found", "user_not_found", "no such Slack member"),
    ],
)
def test_permanent_slack_errors_fail_with_the_reason_recorded(
    slack_chat, alice_on_slack, fault, code, words
):
    _alice, send = alice_on_slack
    if fault == "token":
        slack_chat.token = "xoxb-rotated"
    else:
        slack_chat.error_for(ALICE, fault)
    send()
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.FAILED
    assert delivery.attempts == 1
    assert delivery.error_code == code
    assert words in delivery.error_message
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.PERMANENT
    assert attempt.retry_at is None
    assert attempt.provider == "slack"
    assert slack_chat.messages == []
