"""The email channel through a django-anymail ESP (Postmark) against a local peer.

The channel contract runs through Django 6.1 ``MAILERS`` → anymail's Postmark
backend (``server_token``, ``api_url``, ``timeout`` as OPTIONS) → the local
HTTP server in ``tests.peers.esp`` speaking Postmark's send API. Then the
answers only an ESP gives: 422 with ErrorCode 300 (invalid recipient) and 406
(inactive recipient), 401, 500, 429 with Retry-After, and no answer at all.
"""

from __future__ import annotations

import time

import pytest

from channels.base import InvalidRecipient, PermanentError, SendResult, TransientError
from channels.email import EmailChannel
from tests.channel_contract import ChannelContract, Received, outgoing
from tests.peers.esp import PostmarkPeer

MAILER = "contract-postmark"


class PostmarkChannelPeer:
    """The contract's view of ``EmailChannel`` + anymail's Postmark backend + the peer."""

    good_address = "alice@example.com"
    rejected_address = "nobody@example.com"

    def __init__(self, peer: PostmarkPeer):
        self.peer = peer
        peer.reject(self.rejected_address, "invalid")

    def make_channel(self) -> EmailChannel:
        return EmailChannel("email", MAILER=MAILER)

    def fail_next(self, count: int) -> None:
        self.peer.fail_next(count, 500)

    def down(self) -> None:
        self.peer.down()

    def up(self) -> None:
        self.peer.up()

    def received(self) -> list[Received]:
        return [
            Received(to=m.to, message_id=m.message_id, subject=m.subject, text=m.text)
            for m in self.peer.messages
        ]

    def connections(self) -> int:
        return self.peer.connections


@pytest.fixture
def postmark(settings, esp_peer):
    settings.MAILERS = {**settings.MAILERS, MAILER: esp_peer.mailer(timeout=1.0)}
    return esp_peer


class TestPostmarkChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, postmark):
        return PostmarkChannelPeer(postmark)


# -- what the ESP says ------------------------------------------------------------------


def channel() -> EmailChannel:
    return EmailChannel("email", MAILER=MAILER)


def test_the_request_is_postmarks_json_with_the_server_token(postmark, settings):
    settings.DEFAULT_FROM_EMAIL = "Notify <notify@notify.example>"
    email = channel()
    with email:
        result = email.send(
            outgoing(
                email,
                "alice@example.com",
                subject="Shipped",
                text="Plain\n",
                html="<p>HTML</p>",
                headers={"X-Test": "1"},
            )
        )
    assert isinstance(result, SendResult)
    assert result.provider == "postmark"
    [request] = postmark.requests
    assert request.path == "/email"
    assert request.token == postmark.token
    [message] = postmark.messages
    assert result.message_id == message.message_id  # Postmark's MessageID, not a Message-ID
    assert message.from_ == "Notify <notify@notify.example>"
    assert message.to == "alice@example.com"
    assert (message.subject, message.text, message.html) == ("Shipped", "Plain\n", "<p>HTML</p>")
    assert message.headers["X-Test"] == "1"
    assert message.headers["X-Notify-Delivery"]


def test_422_invalid_to_is_an_invalid_recipient(postmark):
    postmark.reject("bad@example.com", "invalid")
    email = channel()
    with email, pytest.raises(InvalidRecipient) as caught:
        email.send(outgoing(email, "bad@example.com"))
    assert caught.value.provider == "postmark"
    assert not caught.value.retryable
    assert postmark.requests[0].status == 422
    assert postmark.messages == []


def test_422_inactive_recipient_is_refused_permanently(postmark):
    """ErrorCode 406: Postmark will not send to an address that hard-bounced or
    complained; retrying cannot help."""
    postmark.reject("bounced@example.com", "inactive")
    email = channel()
    with email, pytest.raises(InvalidRecipient) as caught:
        email.send(outgoing(email, "bounced@example.com"))
    assert caught.value.code == "recipients_refused"
    assert "rejected" in str(caught.value)
    assert postmark.messages == []


def test_401_bad_token_is_permanent_and_says_so(postmark, settings):
    settings.MAILERS = {**settings.MAILERS, MAILER: postmark.mailer(token="wrong-token")}
    email = channel()
    with email, pytest.raises(PermanentError) as caught:
        email.send(outgoing(email, "alice@example.com"))
    assert not isinstance(caught.value, TransientError)
    assert caught.value.code == "401"
    assert "Server Token you provided" in str(caught.value)
    assert postmark.messages == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient(postmark, status):
    postmark.fail_next(1, status)
    email = channel()
    with email:
        with pytest.raises(TransientError) as caught:
            email.send(outgoing(email, "alice@example.com"))
        assert caught.value.code == str(status)
        email.send(outgoing(email, "alice@example.com"))  # the next one goes through
    assert len(postmark.messages) == 1
    assert postmark.connections == 1  # an error answer keeps the pooled connection


def test_429_is_transient_with_retry_after(postmark):
    postmark.throttle_next(1, retry_after=30)
    email = channel()
    with email, pytest.raises(TransientError) as caught:
        email.send(outgoing(email, "alice@example.com"))
    assert caught.value.code == "429"
    assert caught.value.retry_after == 30.0


def test_no_answer_is_transient_within_the_timeout(postmark, settings):
    settings.MAILERS = {**settings.MAILERS, MAILER: postmark.mailer(timeout=0.3)}
    postmark.hang_next(1, seconds=5)
    email = channel()
    started = time.monotonic()
    with email:
        with pytest.raises(TransientError) as caught:
            email.send(outgoing(email, "alice@example.com"))
        assert time.monotonic() - started < 2
        assert "Error posting to" in str(caught.value)
        email.send(outgoing(email, "alice@example.com"))  # a new session recovers
    assert len(postmark.messages) == 1
