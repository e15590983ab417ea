"""SMTP PIPELINING (RFC 2920) on the bytes path: two round trips a message.

``channels.email.sendmail`` sends ``MAIL``, ``RCPT`` and ``DATA`` in one write
when the server offers PIPELINING, and behaves like ``smtplib.sendmail``
otherwise. Each refusal must end as the same channel error on both paths, and
the session must carry the next message afterwards.
"""

from __future__ import annotations

import smtplib

import pytest

from channels.base import InvalidRecipient, PermanentError, TransientError
from channels.email import EmailChannel
from tests.channel_contract import outgoing

MAILER = "pipelining-smtp"


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def smtp(request, settings, smtp_peer):
    smtp_peer.pipelining = request.param
    settings.MAILERS = {**settings.MAILERS, MAILER: smtp_peer.mailer(timeout=5)}
    return smtp_peer


@pytest.fixture
def writes(monkeypatch):
    """Every ``smtplib.SMTP.send`` (one write to the socket) after the greeting."""
    sent: list[bytes] = []
    original = smtplib.SMTP.send

    def send(self, s):
        sent.append(s.encode() if isinstance(s, str) else s)
        return original(self, s)

    monkeypatch.setattr(smtplib.SMTP, "send", send)
    return sent


def test_a_message_takes_two_writes_when_the_server_pipelines(smtp, writes):
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        channel.send(outgoing(channel, "alice@example.com"))  # opens the session (EHLO)
        writes.clear()
        result = channel.send(outgoing(channel, "bob@example.com"))
        dialogue = list(writes)  # before the QUIT
    if smtp.pipelining:
        assert len(dialogue) == 2
        assert dialogue[0].lower().startswith(b"mail from:<")
        assert b"\r\nrcpt to:<bob@example.com>\r\ndata\r\n" in dialogue[0].lower()
    else:
        assert len(dialogue) == 4  # MAIL, RCPT, DATA, content: smtplib's own dialogue
    assert [m.rcpt_tos for m in smtp.messages] == [("alice@example.com",), ("bob@example.com",)]
    assert smtp.messages[1].message_id == result.message_id
    assert smtp.sessions == 1


@pytest.mark.parametrize(
    ("code", "reply", "error", "shown"),
    [
        (452, "4.2.2 Mailbox full", TransientError, "Mailbox full"),  # deferred: try again
        (550, None, InvalidRecipient, "User unknown"),  # refused: the address is bad
    ],
)
def test_a_refused_recipient_keeps_its_class_and_the_session_goes_on(
    smtp, code, reply, error, shown
):
    smtp.reject("refused@example.com", code, *([reply] if reply else []))
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        with pytest.raises(error) as caught:
            channel.send(outgoing(channel, "refused@example.com"))
        channel.send(outgoing(channel, "carol@example.com"))
    assert caught.value.code == str(code)
    assert shown in str(caught.value)
    assert [m.rcpt_tos for m in smtp.messages] == [("carol@example.com",)]
    assert smtp.sessions == 1


@pytest.mark.parametrize(("code", "error"), [(451, TransientError), (554, PermanentError)])
def test_a_refused_message_keeps_its_class_and_the_session_goes_on(smtp, code, error):
    smtp.defer_next(1, code, f"{code // 100}.7.1 not now")
    channel = EmailChannel("email", MAILER=MAILER)
    with channel:
        with pytest.raises(error) as caught:
            channel.send(outgoing(channel, "erin@example.com"))
        channel.send(outgoing(channel, "erin@example.com"))
    assert not isinstance(caught.value, InvalidRecipient)
    assert caught.value.code == str(code)
    assert len(smtp.messages) == 1
    assert smtp.sessions == 1


def test_dots_at_line_starts_arrive_unchanged(smtp):
    channel = EmailChannel("email", MAILER=MAILER)
    text = ".\n..two\n.three\nend.\n"
    with channel:
        channel.send(outgoing(channel, "frank@example.com", text=text, html=""))
    [received] = smtp.messages
    assert received.text == text
