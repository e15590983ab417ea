"""The Twilio SMS channel through the real twilio SDK against the local Twilio peer.

The shared channel contract runs first; then what is particular to SMS:
segments, the cap, Twilio's error codes, and, end to end through the worker,
what a STOP (21610) and a rate limit do to the deliveries.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from channels.base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    SendResult,
    Suppressed,
    TransientError,
)
from channels.sms import TwilioSmsChannel
from notify import trigger
from notify.models import ContactPoint, Delivery, DeliveryAttempt, Suppression
from notify.models.status import Status
from notify.outbox import status_reports as report
from notify.preferences.suppressions import is_suppressed
from notify.runtime.worker import run_until_idle
from tests.channel_contract import ChannelContract, Received
from tests.peers.twilio import FROM_NUMBER, TwilioPeer

ALICE = "+14155552671"
NOBODY = "+14155550199"


class TwilioChannelPeer:
    """The contract's view of ``TwilioSmsChannel`` + the Twilio peer."""

    good_address = ALICE
    rejected_address = NOBODY

    def __init__(self, peer: TwilioPeer):
        self.peer = peer
        peer.refuse(self.rejected_address, 21211)

    def make_channel(self) -> TwilioSmsChannel:
        return TwilioSmsChannel("sms", **self.peer.channel_options())

    def fail_next(self, count: int) -> None:
        self.peer.server_error_next(count)

    def down(self) -> None:
        self.peer.stop()

    def up(self) -> None:
        self.peer.start()

    def received(self) -> list[Received]:
        return [Received(to=m.to, message_id=m.sid, text=m.body) for m in self.peer.messages]

    def connections(self) -> int:
        return self.peer.connections


class TestTwilioSmsChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, twilio_peer):
        return TwilioChannelPeer(twilio_peer)


def sms(to: str = ALICE, text: str = "Order A1 shipped.") -> OutgoingMessage:
    return OutgoingMessage(delivery_id=1, channel="sms", to=to, text=text)


def channel_for(peer: TwilioPeer, **options) -> TwilioSmsChannel:
    return TwilioSmsChannel("sms", **peer.channel_options(**options))


# -- what is sent -------------------------------------------------------------------------


def test_the_message_reaches_twilio_with_sender_body_and_status_callback(twilio_peer):
    channel = channel_for(twilio_peer)
    with channel:
        result = channel.send(sms(text="Order A1 shipped (DHL)."))
    [message] = twilio_peer.messages
    assert isinstance(result, SendResult)
    assert result.provider == "twilio"
    assert result.message_id == message.sid
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.to, message.from_, message.body) == (
        ALICE,
        FROM_NUMBER,
        "Order A1 shipped (DHL).",
    )
    assert message.status_callback == "http://testserver/webhooks/twilio/status"
    assert result.response["status"] == "queued"
    assert result.response["to"] == ALICE


def test_a_messaging_service_can_send_instead_of_a_number(twilio_peer):
    service = "MG" + "1" * 32
    channel = channel_for(twilio_peer, FROM="", MESSAGING_SERVICE_SID=service)
    with channel:
        result = channel.send(sms())
    [message] = twilio_peer.messages
    assert (message.from_, message.messaging_service_sid) == ("", service)
    assert result.response["status"] == "accepted"


@pytest.mark.parametrize(
    ("text", "segments", "encoding"),
    [
        ("Order A1 shipped.", 1, "GSM-7"),
        ("x" * 160, 1, "GSM-7"),
        ("x" * 161, 2, "GSM-7"),
        ("€" * 80, 1, "GSM-7"),  # extension characters count twice
        ("€" * 81, 2, "GSM-7"),
        ("Ça arrive ✓", 1, "UCS-2"),
        ("ç" * 71, 2, "UCS-2"),
    ],
)
def test_segments_and_encoding_are_recorded(twilio_peer, text, segments, encoding):
    channel = channel_for(twilio_peer)
    with channel:
        result = channel.send(sms(text=text))
    assert result.response["segments"] == segments
    assert result.response["encoding"] == encoding
    assert result.response["num_segments"] == str(segments)  # Twilio's own count agrees
    assert twilio_peer.messages[0].body == text


def test_a_text_over_the_segment_cap_is_refused_before_sending(twilio_peer):
    channel = channel_for(twilio_peer, MAX_SEGMENTS=2)
    with channel:
        channel.send(sms(text="x" * 306))  # exactly 2 parts of 153
        with pytest.raises(PermanentError) as caught:
            channel.send(sms(text="x" * 307))
    assert str(caught.value).endswith("message would be 3 segments, over the cap of 2")
    assert caught.value.response["segments"] == 3
    assert len(twilio_peer.requests) == 1  # the refused one never left


def test_the_default_cap_is_ten_segments(twilio_peer):
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(PermanentError, match="11 segments, over the cap of 10"):
        channel.send(sms(text="ж" * (67 * 10 + 1)))
    assert twilio_peer.requests == []


def test_a_number_not_in_e164_is_refused_without_asking_twilio(twilio_peer):
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(sms(to="0415 555 2671"))
    assert caught.value.code == "invalid_number"
    assert twilio_peer.requests == []


# -- Twilio's refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [21211, 21614, 21217, 21401, 21407])
def test_invalid_numbers_are_invalid_recipients(twilio_peer, code):
    twilio_peer.refuse(NOBODY, code, "The 'To' number is not valid.")
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(sms(to=NOBODY))
    error = caught.value
    assert not error.retryable
    assert error.code == str(code)
    assert error.provider == "twilio"
    assert "HTTP 400" in str(error) and "is not valid" in str(error)
    assert error.response["more_info"] == f"https://www.twilio.com/docs/errors/{code}"


def test_a_region_without_permission_is_permanent(twilio_peer):
    twilio_peer.refuse(NOBODY, 21408, "Permission to send an SMS has not been enabled")
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(sms(to=NOBODY))
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == "21408"


def test_a_recipient_who_replied_stop_is_suppressed(twilio_peer):
    twilio_peer.unsubscribe(NOBODY)
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(Suppressed) as caught:
        channel.send(sms(to=NOBODY))
    assert caught.value.code == "21610"
    assert "unsubscribed recipient" in str(caught.value)


def test_a_rate_limit_is_transient_with_retry_after(twilio_peer):
    twilio_peer.rate_limit_next(1, retry_after=2)
    channel = channel_for(twilio_peer)
    with channel:
        with pytest.raises(TransientError) as caught:
            channel.send(sms())
        channel.send(sms())  # the next one goes through
    assert caught.value.code == "20429"
    assert caught.value.retry_after == 2.0
    assert len(twilio_peer.messages) == 1


def test_a_server_error_is_transient_without_retry_after(twilio_peer):
    twilio_peer.server_error_next(1)
    channel = channel_for(twilio_peer)
    with channel, pytest.raises(TransientError) as caught:
        channel.send(sms())
    assert caught.value.code == "20500"
    assert caught.value.retry_after is None


def test_a_hang_is_a_transient_time_out(twilio_peer):
    twilio_peer.hang_next(1, seconds=5)
    channel = channel_for(twilio_peer, TIMEOUT=0.3)
    with channel, pytest.raises(TransientError) as caught:
        channel.send(sms())
    assert caught.value.code == "timeout"
    assert "did not answer within 0.3 s" in str(caught.value)


def test_wrong_credentials_are_a_configuration_error(twilio_peer):
    channel = channel_for(twilio_peer, AUTH_TOKEN="0" * 32)
    with channel, pytest.raises(ChannelConfigurationError, match="AUTH_TOKEN"):
        channel.send(sms())
    assert twilio_peer.messages == []


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"ACCOUNT_SID": ""}, "set ACCOUNT_SID"),
        ({"AUTH_TOKEN": ""}, "set AUTH_TOKEN"),
        ({"FROM": ""}, "set FROM (an E.164 number) or MESSAGING_SERVICE_SID"),
        ({"FROM": "Notify"}, "is not an E.164 number"),
    ],
)
def test_missing_options_say_what_to_set(twilio_peer, options, says):
    channel = channel_for(twilio_peer, **options)
    with pytest.raises(ChannelConfigurationError, match=re.escape(says)):
        channel.open()


def test_the_status_map_speaks_notify_status_types():
    assert set(TwilioSmsChannel.STATUS_MAP.values()) <= set(report.STATUS_FOR)
    assert TwilioSmsChannel.STATUS_MAP["delivered"] == report.DELIVERED
    assert TwilioSmsChannel.STATUS_MAP["undelivered"] == report.BOUNCED
    assert TwilioSmsChannel.STATUS_MAP["failed"] == report.FAILED


def test_the_sdk_never_takes_the_api_host_from_the_environment(twilio_peer, monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    channel = channel_for(twilio_peer)
    with channel:
        channel.send(sms())
    assert len(twilio_peer.messages) == 1


# -- end to end through the worker ------------------------------------------------------------


@pytest.fixture
def sms_rule(make_rule):
    return make_rule(channels=["sms"])


@pytest.fixture
def phone_user(make_user):
    def make(number: str, username: str | None = None):
        user = make_user(username)
        ContactPoint.objects.create(
            user=user, kind="phone", address=number, verified_at=timezone.now()
        )
        return user

    return make


def sms_deliveries(user) -> list[Delivery]:
    return list(Delivery.objects.filter(notification__user=user, channel="sms").order_by("pk"))


def test_stop_at_twilio_suppresses_the_number_and_the_next_sms_is_skipped(
    twilio_sms, sms_rule, phone_user
):
    bob = phone_user(NOBODY, "bob")
    twilio_sms.unsubscribe(NOBODY)
    trigger("order.shipped", {"order_id": "A1"}, recipients=[bob])
    run_until_idle()
    [first] = sms_deliveries(bob)
    assert first.status == Status.FAILED
    assert (first.provider, first.error_code) == ("twilio", "21610")
    suppression = Suppression.objects.get(kind="phone", address=NOBODY)
    assert (suppression.reason, suppression.source) == ("sms_stop", "twilio")
    assert suppression.active and is_suppressed("phone", NOBODY)

    trigger("order.shipped", {"order_id": "A2"}, recipients=[bob])
    run_until_idle()
    _first, second = sms_deliveries(bob)
    assert (second.status, second.skip_reason) == (Status.SKIPPED, "suppressed")
    assert len(twilio_sms.requests) == 1  # nothing more reached Twilio


def test_an_sms_through_the_worker_is_rendered_and_recorded(twilio_sms, sms_rule, phone_user):
    alice = phone_user(ALICE, "alice")
    trigger("order.shipped", {"order_id": "A7", "carrier": "DHL"}, recipients=[alice])
    run_until_idle()
    [delivery] = sms_deliveries(alice)
    [message] = twilio_sms.messages
    assert delivery.status == Status.SENT
    assert delivery.provider_message_id == message.sid
    assert message.to == ALICE
    assert message.body.startswith("Order A7 shipped (DHL).")
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.response["segments"] == 1
    assert attempt.response["encoding"] == "GSM-7"
    assert attempt.sent["to"] == ALICE


def test_a_rate_limit_waits_at_least_retry_after(settings, twilio_sms, sms_rule, phone_user):
    # A backoff far below Retry-After, so that it is Retry-After that decides.
    settings.NOTIFY = {**settings.NOTIFY, "RETRY_BASE_DELAY": 0.1, "RETRY_JITTER": 0.0}
    alice = phone_user(ALICE, "alice")
    twilio_sms.rate_limit_next(1, retry_after=2)
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()
    [delivery] = sms_deliveries(alice)
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert delivery.status == Status.PENDING
    assert attempt.outcome == DeliveryAttempt.Outcome.TRANSIENT
    assert attempt.error_code == "20429"
    wait = delivery.next_attempt_at - attempt.started_at
    assert timedelta(seconds=2) <= wait < timedelta(seconds=3)
    assert twilio_sms.messages == []
