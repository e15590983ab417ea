"""The email channel against a real SMTP server, and the in-app channel.

The email channel runs the shared channel contract through Django's SMTP
backend (a ``MAILERS`` entry with host/port/timeout) to the aiosmtpd peer.
"""

from __future__ import annotations

import pytest

from channels import breaker
from channels.base import (
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from channels.breaker import CircuitOpen
from channels.email import EmailChannel
from channels.inapp import InAppChannel
from notify.inbox.store import inbox, unread_count
from notify.models import Event, Notification
from tests.channel_contract import ChannelContract, Received, outgoing
from tests.peers.smtp import SmtpPeer

MAILER = "contract-smtp"


class SmtpChannelPeer:
    """The contract's view of ``EmailChannel`` + the aiosmtpd peer."""

    good_address = "alice@example.com"
    rejected_address = "nobody@example.com"

    def __init__(self, smtp: SmtpPeer):
        self.smtp = smtp
        smtp.reject(self.rejected_address, 550)

    def make_channel(self) -> EmailChannel:
        return EmailChannel("email", MAILER=MAILER)

    def fail_next(self, count: int) -> None:
        self.smtp.defer_next(count, 451)

    def down(self) -> None:
        self.smtp.stop()

    def up(self) -> None:
        self.smtp.start()

    def received(self) -> list[Received]:
        return [
            Received(
                to=",".join(m.rcpt_tos), message_id=m.message_id, subject=m.subject, text=m.text
            )
            for m in self.smtp.messages
        ]

    def connections(self) -> int:
        return self.smtp.sessions


@pytest.fixture
def smtp_channel_settings(settings, smtp_peer):
    settings.MAILERS = {**settings.MAILERS, MAILER: smtp_peer.mailer(timeout=5)}
    return smtp_peer


class TestEmailChannelContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, smtp_channel_settings):
        return SmtpChannelPeer(smtp_channel_settings)


# -- email specifics ---------------------------------------------------------------


def test_message_arrives_with_text_html_and_headers(smtp_channel_settings, settings):
    settings.DEFAULT_FROM_EMAIL = "notify@notify.example"
    channel = EmailChannel("email", MAILER=MAILER)
    message = OutgoingMessage(
        delivery_id=42,
        channel="email",
        to="bob@example.com",
        subject="Your order A1 has shipped",
        text="Hi Bob,\nit is on its way.\n",
        html="<p>Hi Bob, it is <strong>on its way</strong>.</p>",
        headers={"List-Unsubscribe": "<https://notify.example/u/1>"},
    )
    with channel:
        result = channel.send(message)
    [received] = smtp_channel_settings.messages
    assert received.rcpt_tos == ("bob@example.com",)
    assert received.mail_from == "notify@notify.example"
    assert received.from_ == "notify@notify.example"
    assert received.to == "bob@example.com"
    assert received.subject == "Your order A1 has shipped"
    assert received.text == "Hi Bob,\nit is on its way.\n"
    assert received.html.strip() == "<p>Hi Bob, it is <strong>on its way</strong>.</p>"
    assert received.headers["X-Notify-Delivery"] == "42"
    assert received.headers["List-Unsubscribe"] == "<https://notify.example/u/1>"
    assert received.message_id == result.message_id
    assert result.message_id.endswith("@notify.example>")
    assert result.provider == "smtp"


def test_text_only_message_has_no_html_part(smtp_channel_settings):
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        channel.send(outgoing(channel, "carol@example.com", html=""))
    [received] = smtp_channel_settings.messages
    assert received.html == ""
    assert received.message.get_content_type() == "text/plain"


def test_from_email_option_overrides_the_default(smtp_channel_settings):
    channel = EmailChannel("email", MAILER=MAILER, FROM_EMAIL="alerts@ops.example")
    with channel:
        result = channel.send(outgoing(channel, "dave@example.com"))
    [received] = smtp_channel_settings.messages
    assert received.mail_from == "alerts@ops.example"
    assert result.message_id.endswith("@ops.example>")


def test_temporary_recipient_refusal_is_transient(smtp_channel_settings):
    smtp_channel_settings.reject("full@example.com", 452, "4.2.2 Mailbox full")
    channel = EmailChannel("email", MAILER=MAILER)
    with channel, pytest.raises(TransientError) as caught:
        channel.send(outgoing(channel, "full@example.com"))
    assert caught.value.code == "452"
    assert "Mailbox full" in str(caught.value)


def test_permanent_data_refusal_is_permanent_not_invalid_recipient(smtp_channel_settings):
    smtp_channel_settings.defer_next(1, 554, "5.7.1 Message rejected as spam")
    channel = EmailChannel("email", MAILER=MAILER)
    with channel, pytest.raises(PermanentError) as caught:
        channel.send(outgoing(channel, "erin@example.com"))
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == "554"
    assert "rejected as spam" in str(caught.value)


def test_rejected_recipient_names_the_server_answer(smtp_channel_settings):
    smtp_channel_settings.reject("gone@example.com", 550)
    channel = EmailChannel("email", MAILER=MAILER)
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(outgoing(channel, "gone@example.com"))
    assert caught.value.code == "550"
    assert "550" in str(caught.value) and "User unknown" in str(caught.value)


def test_peer_restarted_mid_batch_is_transient_then_recovers(smtp_channel_settings):
    peer = smtp_channel_settings
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        channel.send(outgoing(channel, "frank@example.com"))
        peer.stop()  # drops the open session
        peer.start()
        with pytest.raises(TransientError):
            channel.send(outgoing(channel, "frank@example.com"))
        channel.send(outgoing(channel, "frank@example.com"))
    assert len(peer.messages) == 2
    assert peer.sessions == 2


def test_message_id_is_recorded_as_sent_with_a_display_name_sender(smtp_channel_settings, settings):
    settings.DEFAULT_FROM_EMAIL = "Notify <notify@notify.example>"
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        result = channel.send(outgoing(channel, "gus@example.com"))
    [received] = smtp_channel_settings.messages
    assert received.from_ == "Notify <notify@notify.example>"
    assert result.message_id == received.message_id
    assert result.message_id.endswith("@notify.example>")
    assert not result.message_id.endswith(">>")


@pytest.mark.parametrize(
    "address", ["not an address", "a@b@c", "ann@example.com\nBcc: eve@example.com"]
)
def test_malformed_address_is_an_invalid_recipient(smtp_channel_settings, address):
    channel = EmailChannel("email", MAILER=MAILER)
    with channel, pytest.raises(InvalidRecipient):
        channel.send(outgoing(channel, address))
    assert smtp_channel_settings.messages == []


def test_malformed_address_is_permanent_and_sends_nothing(smtp_channel_settings):
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        with pytest.raises(PermanentError) as caught:
            channel.send(outgoing(channel, "ann@example.com\nBcc: eve@example.com"))
        # The session is still good for the next message of the batch.
        channel.send(outgoing(channel, "ann@example.com"))
    assert not caught.value.retryable
    assert [m.rcpt_tos for m in smtp_channel_settings.messages] == [("ann@example.com",)]
    assert smtp_channel_settings.sessions == 1


# -- in-app --------------------------------------------------------------------------


@pytest.fixture
def notification(make_user, category):
    user = make_user("ivy")
    event = Event.objects.create(type="order.shipped", payload={"order_id": "A1"})
    return Notification.objects.create(event=event, user=user, category=category)


def inapp_message(notification: Notification, **extra) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=1,
        channel="inapp",
        to="",
        subject="Order A1 shipped",
        text="It is on its way.",
        extra={"notification_id": notification.pk, "user_id": notification.user_id, **extra},
    )


def test_inapp_send_writes_the_inbox_item(notification):
    channel = InAppChannel("inapp")
    assert channel.address_kind is None
    with channel:
        result = channel.send(inapp_message(notification, url="https://shop.example/o/A1"))
    assert result == SendResult(provider="inbox", message_id=str(notification.pk))
    notification.refresh_from_db()
    assert notification.title == "Order A1 shipped"
    assert notification.body == "It is on its way."
    assert notification.url == "https://shop.example/o/A1"
    assert notification.inbox_at is not None
    assert list(inbox(notification.user_id)) == [notification]
    assert unread_count(notification.user_id) == 1


def test_inapp_item_is_not_in_the_inbox_before_it_is_sent(notification):
    assert list(inbox(notification.user_id)) == []
    assert unread_count(notification.user_id) == 0


stored: list[OutgoingMessage] = []


def remember(message: OutgoingMessage) -> None:
    stored.append(message)


def test_inapp_store_option_names_the_writer(notification):
    stored.clear()
    channel = InAppChannel("inapp", STORE="tests.channels.test_channel_email.remember")
    message = inapp_message(notification)
    channel.send(message)
    assert stored == [message]
    notification.refresh_from_db()
    assert notification.inbox_at is None


def test_an_smtp_server_that_is_down_opens_the_mailers_breaker(smtp_channel_settings, monkeypatch):
    """Three failed connections open the breaker: the next sends make no
    connection and wait for the cool-down; then one trial closes it."""
    now = [1_000_000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    channel = EmailChannel("email", MAILER=MAILER, FAILURE_THRESHOLD=3, COOL_DOWN=30)
    smtp_channel_settings.stop()
    errors = []
    for n in range(8):
        try:
            channel.send(outgoing(channel, f"user{n}@example.com"))
        except TransientError as exc:
            errors.append(exc)
    assert [type(e) for e in errors[:3]] == [TransientError] * 3
    assert all(isinstance(e, CircuitOpen) for e in errors[3:]) and len(errors) == 8
    assert errors[-1].retry_after == 30
    smtp_channel_settings.start()
    now[0] += 30
    with channel:
        channel.send(outgoing(channel, "back@example.com"))  # the trial
        channel.send(outgoing(channel, "after@example.com"))
    assert [m.rcpt_tos for m in smtp_channel_settings.messages] == [
        ("back@example.com",),
        ("after@example.com",),
    ]
    assert channel.breaker.state() == "closed"
