"""The Apprise channel through the real apprise package, to the local receiver
over Apprise's ``json://`` scheme. Skipped where apprise is not installed."""

from __future__ import annotations

import pytest

pytest.importorskip("apprise")

from channels.apprise import AppriseChannel
from channels.base import InvalidRecipient, OutgoingMessage, TransientError
from tests.channel_contract import ChannelContract, Received, outgoing
from tests.peers.webhooks import WebhookPeer

LOCAL = {"ALLOW_HTTP": True, "ALLOWED_HOSTS": ["127.0.0.1"], "TIMEOUT": 5}


def json_url(http_url: str) -> str:
    return "json://" + http_url.removeprefix("http://")


class AppriseChannelPeer:
    """The contract's view of ``AppriseChannel`` + the receiver."""

    # Apprise posts with requests.request(): a new connection per message.
    shares_connections = False
    rejected_address = "nosuchservice://whatever"  # not an Apprise URL

    def __init__(self, peer: WebhookPeer):
        self.peer = peer
        self.good_address = json_url(peer.add_endpoint("plain"))

    def make_channel(self) -> AppriseChannel:
        return AppriseChannel("apprise", **LOCAL)

    def fail_next(self, count: int) -> None:
        self.peer.fail_next(count, 503, "upstream unavailable")

    def down(self) -> None:
        self.peer.stop()

    def up(self) -> None:
        self.peer.start()

    def received(self) -> list[Received]:
        return [
            Received(to=json_url(a.url), message_id=a.delivery, text=a.body["message"])
            for a in self.peer.accepted
        ]

    def connections(self) -> int:
        return self.peer.connections


class TestAppriseChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, webhook_peer):
        return AppriseChannelPeer(webhook_peer)


def test_the_receiver_gets_apprises_json_with_title_and_body(webhook_peer):
    url = json_url(webhook_peer.add_endpoint("plain"))
    channel = AppriseChannel("apprise", **LOCAL)
    message = OutgoingMessage(
        delivery_id=9, channel="apprise", to=url, subject="Shipped", text="Order A1 shipped"
    )
    result = channel.send(message)
    [got] = webhook_peer.accepted
    assert got.body["title"] == "Shipped"
    assert got.body["message"] == "Order A1 shipped"
    assert got.delivery == "9" == result.message_id
    assert result.provider == "apprise"


def test_a_failure_carries_apprises_reason_and_is_transient(webhook_peer):
    url = webhook_peer.add_endpoint("plain")
    webhook_peer.respond(url, 404, "no such hook")
    channel = AppriseChannel("apprise", **LOCAL)
    with pytest.raises(TransientError) as caught:
        channel.send(outgoing(channel, json_url(url) + "?retry=3"))
    assert caught.value.code == "apprise_failed"
    assert "404" in caught.value.message
    assert len(webhook_peer.requests) == 1  # Apprise's own retries are off


@pytest.mark.parametrize(
    ("options", "url", "code"),
    [
        ({}, "json://127.0.0.1:9/in/x", "url_refused"),  # http to a private host
        ({"ALLOW_HTTP": True}, "json://10.0.0.5/in/x", "url_refused"),
        ({}, "jsons://127.0.0.1/in/x", "url_refused"),
        ({"SCHEMES": ["ntfys", "tgram"]}, "json://example.com/in/x", "scheme_refused"),
        ({}, "", "invalid_url"),
        ({}, "https://example.com/not-an-apprise-url-scheme", "invalid_url"),
    ],
)
def test_urls_users_may_not_use(options, url, code):
    channel = AppriseChannel("apprise", **options)
    with pytest.raises(InvalidRecipient) as caught:
        channel.send(outgoing(channel, url))
    assert caught.value.code == code
