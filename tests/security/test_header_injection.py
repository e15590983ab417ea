"""Email header injection through payload text (issue 13; CVE-2024-6923).

The payload hides CR/LF in an RFC 2047 encoded word. On a vulnerable Python the
email package decoded it and wrote the line break out verbatim, producing real
``Reply-To:`` and ``X-Injected:`` headers at the SMTP server. These tests send
it through the real SMTP path (Django's SMTP backend to the aiosmtpd peer) and
look at the raw bytes the peer received.
"""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

import pytest

from channels.base import OutgoingMessage, PermanentError
from channels.email import CheckedEmail, EmailChannel
from channels.headers import HeaderInjection, neutralise_header_value, refuse_injected_headers
from notify.models import Delivery
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.delivery import test_e2e_email as e2e

# The end-to-end email test's fixtures: a rule, its templates and the model binding.
message_templates = e2e.message_templates
deactivation_emits = e2e.deactivation_emits
security_team = e2e.security_team

ENCODED = "=?utf-8?q?A=0D=0AReply-To:_billing@evil.test=0D=0AX-Injected:_1?="
PAYLOADS = [
    "=?utf-8?q?A=0D=0AReply-To:_billing@evil.test?=",
    ENCODED,
    "Hello =?utf-8?b?QQ0KWC1JbmplY3RlZDogMQ==?= there",  # base64: "A\r\nX-Injected: 1"
    "Plain\r\nX-Injected: 1",
    "Plain\nReply-To: billing@evil.test",
]


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def header_names(raw: bytes) -> list[bytes]:
    return [
        line.split(b":", 1)[0].lower()
        for line in header_block(raw).split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]


def assert_nothing_injected(raw: bytes) -> None:
    names = header_names(raw)
    assert b"reply-to" not in names
    assert b"x-injected" not in names
    for line in header_block(raw).split(b"\r\n"):
        assert not line.lower().startswith((b"reply-to:", b"x-injected:"))


@pytest.mark.parametrize("subject", PAYLOADS)
def test_channel_sends_the_payload_as_text_not_headers(subject, settings, smtp_peer):
    settings.MAILERS = {**settings.MAILERS, "inject": smtp_peer.mailer(timeout=5)}
    channel = EmailChannel("email", MAILER="inject")
    try:
        channel.send(
            OutgoingMessage(
                delivery_id=1,
                channel="email",
                to="alice@example.com",
                subject=subject,
                text="body",
                headers={"X-Rule": subject},
            )
        )
    finally:
        channel.close()
    [received] = smtp_peer.messages
    assert_nothing_injected(received.raw)
    assert "\n" not in received.subject and "\r" not in received.subject
    assert "Reply-To" in received.subject or "X-Injected" in received.subject


@pytest.mark.django_db(transaction=True)
def test_encoded_word_in_a_payload_reaches_smtp_without_new_headers(
    smtp_mailer, message_templates, deactivation_emits, security_team
):
    """The issue's reproduction: a model save whose payload lands in the subject."""
    *_, mallory = security_team
    mallory.username = ENCODED
    mallory.is_active = False
    mallory.save()
    run_until_idle()

    received = smtp_mailer.messages
    assert sorted(m.rcpt_tos[0] for m in received) == ["alice@mail.example", "bob@example.com"]
    for message in received:
        assert_nothing_injected(message.raw)
        assert b"evil.test" in header_block(message.raw)  # there, but inside the Subject
        assert (
            message.subject == "Account A Reply-To: billing@evil.test X-Injected: 1 was deactivated"
        )
    emails = Delivery.objects.filter(channel="email", status=Status.SENT)
    assert emails.count() == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Your order shipped", "Your order shipped"),
        ("=?utf-8?q?caf=C3=A9?=", "=?utf-8?q?caf=C3=A9?="),  # a harmless encoded word stays
        ("=?utf-8?q?A=0D=0AReply-To:_x@evil.test?=", "A Reply-To: x@evil.test"),
        ("A\r\nB", "A B"),
        ("A\x00B", "A B"),
    ],
)
def test_neutralise_header_value(value, expected):
    assert neutralise_header_value("Subject", value) == expected


class VulnerableFolding:
    """What a vulnerable email package writes: the decoded value, line breaks included."""

    def __init__(self, headers, linesep="\r\n"):
        self.headers = headers
        self.policy = self
        self.linesep = linesep

    def items(self):
        return list(self.headers.items())

    def fold(self, name, value):
        return f"{name}: {value}{self.linesep}"


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
@pytest.mark.parametrize("value", ["A\r\nReply-To: billing@evil.test", "A\nX-Injected: 1", "A\rB"])
def test_the_check_after_encoding_refuses_a_line_break_that_is_not_a_fold(value, linesep):
    with pytest.raises(HeaderInjection, match="Subject"):
        refuse_injected_headers(VulnerableFolding({"Subject": value}, linesep))


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_the_check_after_encoding_accepts_folds(linesep):
    folded = f"=?utf-8?q?a?={linesep} =?utf-8?q?b?={linesep}\tc"
    refuse_injected_headers(VulnerableFolding({"List-Unsubscribe": folded}, linesep))


def test_the_check_after_encoding_accepts_folded_long_headers():
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = "word " * 60  # folded over several lines, each continued by a space
    assert "\r\n " in message.policy.fold("Subject", message["Subject"])
    refuse_injected_headers(message)


def test_an_injection_found_after_encoding_is_a_permanent_error(settings, smtp_peer, monkeypatch):
    settings.MAILERS = {**settings.MAILERS, "inject": smtp_peer.mailer(timeout=5)}

    def vulnerable_message(self, **kwargs):
        refuse_injected_headers(VulnerableFolding({"Subject": "A\r\nX-Injected: 1"}))

    monkeypatch.setattr(CheckedEmail, "message", vulnerable_message)
    channel = EmailChannel("email", MAILER="inject")
    with pytest.raises(PermanentError, match="inject a header"):
        channel.send(OutgoingMessage(delivery_id=1, channel="email", to="a@example.com"))
    channel.close()
    assert smtp_peer.messages == []
