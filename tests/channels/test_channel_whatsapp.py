"""WhatsApp through Twilio: the real twilio SDK against the local Twilio peer.

The shared channel contract runs first; then what is particular to WhatsApp:
``whatsapp:`` addresses on the SMS account, approved content templates
(``ContentSid`` + ``ContentVariables``), the 24-hour window (63016) explained
in the error, and Twilio's WhatsApp error codes.
"""

from __future__ import annotations

import json
import re

import pytest

from channels.base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from channels.whatsapp import TwilioWhatsAppChannel, message_parts
from tests.channel_contract import ChannelContract, Received
from tests.peers.twilio import FROM_NUMBER, TwilioPeer

ALICE = "+14155552671"
NOBODY = "+14155550199"


class WhatsAppChannelPeer:
    """The contract's view of ``TwilioWhatsAppChannel`` + the Twilio peer."""

    good_address = ALICE
    rejected_address = NOBODY

    def __init__(self, peer: TwilioPeer):
        self.peer = peer
        peer.refuse(NOBODY, 63003, "Channel could not find To address")

    def make_channel(self) -> TwilioWhatsAppChannel:
        return whatsapp_channel(self.peer)

    def fail_next(self, count: int) -> None:
        self.peer.server_error_next(count)

    def down(self) -> None:
        self.peer.stop()

    def up(self) -> None:
        self.peer.start()

    def received(self) -> list[Received]:
        return [
            Received(to=m.to.removeprefix("whatsapp:"), message_id=m.sid, text=m.body)
            for m in self.peer.messages
        ]

    def connections(self) -> int:
        return self.peer.connections


class TestTwilioWhatsAppChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, twilio_peer):
        return WhatsAppChannelPeer(twilio_peer)


def whatsapp_channel(peer: TwilioPeer, **options) -> TwilioWhatsAppChannel:
    return TwilioWhatsAppChannel("whatsapp", **peer.channel_options(**options))


def message(to: str = ALICE, **fields) -> OutgoingMessage:
    fields.setdefault("text", "Order A1 shipped\nWith DHL, arriving Tuesday.")
    return OutgoingMessage(delivery_id=3, channel="whatsapp", to=to, **fields)


# -- free-form -----------------------------------------------------------------------------


@pytest.mark.parametrize("sender", [FROM_NUMBER, f"whatsapp:{FROM_NUMBER}"])
@pytest.mark.parametrize("to", [ALICE, f"whatsapp:{ALICE}"])
def test_free_form_goes_to_whatsapp_addresses_on_the_sms_account(twilio_peer, sender, to):
    channel = whatsapp_channel(twilio_peer, FROM=sender)
    with channel:
        result = channel.send(message(to))
    [sent] = twilio_peer.messages
    assert (sent.to, sent.from_) == (f"whatsapp:{ALICE}", f"whatsapp:{FROM_NUMBER}")
    assert sent.body == "Order A1 shipped\nWith DHL, arriving Tuesday."
    assert sent.content_sid == ""
    assert sent.status_callback == "http://testserver/webhooks/twilio/status"
    assert result.provider == "twilio"  # status callbacks match it like an SMS
    assert result.message_id == sent.sid
    assert result.response["to"] == f"whatsapp:{ALICE}"


def test_the_sms_channel_still_sends_plain_numbers(twilio_peer):
    from channels.sms import TwilioSmsChannel

    with TwilioSmsChannel("sms", **twilio_peer.channel_options()) as channel:
        channel.send(message())
    assert twilio_peer.messages[0].to == ALICE


def test_a_long_or_empty_text_is_refused_before_asking_twilio(twilio_peer):
    channel = whatsapp_channel(twilio_peer)
    with channel:
        with pytest.raises(PermanentError, match="over Twilio's 1600"):
            channel.send(message(text="x" * 1601))
        with pytest.raises(PermanentError, match="empty"):
            channel.send(message(text="  \n"))
        channel.send(message(text="x" * 1600))
    assert len(twilio_peer.requests) == 1


def test_a_number_not_in_e164_is_refused_without_asking_twilio(twilio_peer):
    channel = whatsapp_channel(twilio_peer)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message("whatsapp:0415 555 2671"))
    assert caught.value.code == "invalid_number"
    assert twilio_peer.requests == []


# -- the 24-hour window ------------------------------------------------------------------------


def test_outside_the_24_hour_window_is_permanent_and_says_what_to_do(twilio_peer):
    twilio_peer.close_session(ALICE)
    channel = whatsapp_channel(twilio_peer)
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(message())
    error = caught.value
    assert type(error) is PermanentError and not error.retryable
    assert error.code == "63016"
    assert "24 h of the user's last message" in error.message
    assert "CONTENT_SID" in error.message
    assert "outside the allowed window" in error.message  # what Twilio said
    assert error.response["more_info"] == "https://www.twilio.com/docs/errors/63016"
    assert twilio_peer.messages == []


def test_an_approved_template_goes_out_at_any_time(twilio_peer):
    sid = twilio_peer.add_content("Your order {{1}} is on its way: {{2}}")
    twilio_peer.close_session(ALICE)  # free-form would be refused
    channel = whatsapp_channel(
        twilio_peer, CONTENT_SID=sid, CONTENT_VARIABLES={"1": "title", "2": "url"}
    )
    with channel:
        result = channel.send(message(extra={"url": "https://shop.test/A1"}))
    [sent] = twilio_peer.messages
    assert sent.content_sid == sid
    assert sent.content_variables == {"1": "Order A1 shipped", "2": "https://shop.test/A1"}
    assert sent.body == "Your order Order A1 shipped is on its way: https://shop.test/A1"
    form = sent.request.form()
    assert "Body" not in form  # a template is sent without Body (Twilio: 63016 otherwise)
    assert json.loads(form["ContentVariables"]) == sent.content_variables
    assert result.response["content_sid"] == sid


def test_template_variables_default_to_the_text_and_are_never_empty(twilio_peer):
    sid = twilio_peer.add_content("{{1}} / {{2}}")
    channel = whatsapp_channel(
        twilio_peer, CONTENT_SID=sid, CONTENT_VARIABLES={"1": "title", "2": "url"}
    )
    with channel:
        channel.send(message())  # no url: "-" rather than an empty variable (21656)
    assert twilio_peer.messages[0].content_variables == {"1": "Order A1 shipped", "2": "-"}
    default = whatsapp_channel(twilio_peer, CONTENT_SID=sid)
    with default:
        default.send(message())
    assert twilio_peer.messages[1].content_variables == {
        "1": "Order A1 shipped\nWith DHL, arriving Tuesday."
    }


def test_message_parts():
    parts = message_parts(message(subject=" Shipped ", extra={"url": 5}))
    assert parts == {
        "text": "Order A1 shipped\nWith DHL, arriving Tuesday.",
        "title": "Shipped",
        "body": "Order A1 shipped\nWith DHL, arriving Tuesday.",
        "subject": "Shipped",
        "url": "",
    }


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"CONTENT_SID": "HX123"}, "is not a content template SID"),
        ({"CONTENT_SID": "HX" + "a" * 32, "CONTENT_VARIABLES": {"1": "payload"}}, "must map"),
        ({"FROM": "whatsapp:Notify"}, "is not an E.164 number"),
        ({"AUTH_TOKEN": ""}, "Twilio WhatsApp channel 'whatsapp': set AUTH_TOKEN"),
    ],
)
def test_bad_options_say_what_to_set(twilio_peer, options, says):
    with pytest.raises(ChannelConfigurationError, match=re.escape(says)):
        whatsapp_channel(twilio_peer, **options).open()


def test_an_unknown_sender_is_a_configuration_error(twilio_peer):
    twilio_peer.refuse(ALICE, 63007, "Twilio could not find a Channel with the specified From")
    channel = whatsapp_channel(twilio_peer)
    with channel, pytest.raises(ChannelConfigurationError, match="WhatsApp sender"):
        channel.send(message())


def test_a_template_twilio_does_not_know_is_a_configuration_error(twilio_peer):
    channel = whatsapp_channel(twilio_peer, CONTENT_SID="HX" + "0" * 32)
    with channel, pytest.raises(ChannelConfigurationError, match="check CONTENT_SID"):
        channel.send(message())
    assert twilio_peer.messages == []


# -- Twilio's WhatsApp codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (63003, InvalidRecipient),
        (63024, InvalidRecipient),
        (63018, TransientError),
        (63013, PermanentError),
        (21610, PermanentError),  # Suppressed: the recipient opted out
    ],
)
def test_whatsapp_error_codes(twilio_peer, code, kind):
    twilio_peer.refuse(ALICE, code, f"error {code}")
    channel = whatsapp_channel(twilio_peer)
    with channel, pytest.raises(kind) as caught:
        channel.send(message())
    assert caught.value.code == str(code)
