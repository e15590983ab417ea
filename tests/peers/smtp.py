"""A real SMTP server (aiosmtpd) on 127.0.0.1, and the pytest fixtures around it.

The peer speaks SMTP on a free port and records every message it accepts,
parsed with the ``email`` package. A test can make it misbehave the way real
mail servers do:

* ``reject(address)``: answer ``550`` (or any code) to ``RCPT TO`` for one address;
* ``defer_next(n)``: answer ``451`` to the next ``n`` messages' ``DATA``;
* ``stall(address, seconds)``: hold the end of ``DATA`` of messages to one
  address for ``seconds`` before answering (a server that stops answering;
  ``stalled`` counts them);
* ``stop()`` / ``start()``: go down and come back up on the same port;
* ``latency``: seconds each message's ``DATA`` takes before its ``250``;
* ``pipelining``: offer PIPELINING (RFC 2920) in the EHLO answer, as common
  MTAs do (on by default; off: a server that does not, every command waits).

``sessions`` counts SMTP sessions (one per EHLO/HELO), so a test can check that
a batch of sends shared one connection. The controller's own start-up probe
never greets, so it is not counted.

Fixtures: ``smtp_peer`` (a running peer, stopped after the test) and
``smtp_mailer`` (``settings.MAILERS["default"]`` pointed at the peer through
Django's SMTP backend; returns the peer).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"

# aiosmtpd logs every command at INFO; the tests assert on what it recorded instead.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the peer accepted: the envelope and the parsed content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    from_: str
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    raw: bytes = field(repr=False)
    message: EmailMessage = field(repr=False)

    @property
    def message_id(self) -> str:
        return self.headers.get("Message-ID", "")


def parse_message(mail_from: str, rcpt_tos: list[str], raw: bytes) -> ReceivedMessage:
    parsed: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    return ReceivedMessage(
        mail_from=mail_from,
        rcpt_tos=tuple(rcpt_tos),
        from_=str(parsed.get("From", "")),
        to=str(parsed.get("To", "")),
        subject=str(parsed.get("Subject", "")),
        text=_content(text_part),
        html=_content(html_part),
        headers={name: str(value) for name, value in parsed.items()},
        raw=raw,
        message=parsed,
    )


def _content(part: EmailMessage | None) -> str:
    """A part's decoded text with SMTP's CRLF line ends turned into ``\\n``."""
    if part is None:
        return ""
    return part.get_content().replace("\r\n", "\n")


class _Handler:
    """aiosmtpd handler hooks; runs on the controller's event-loop thread."""

    def __init__(self, peer: SmtpPeer):
        self.peer = peer

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.peer._count_session()
        session.host_name = hostname
        if self.peer.pipelining:  # aiosmtpd reads pipelined commands but does not say so
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self.peer._count_session()
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.peer._rejection_for(address)
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        stall = self.peer._stall_for(envelope.rcpt_tos)
        if stall:
            await asyncio.sleep(stall)
        answer = self.peer._take_deferral()
        if answer is not None:
            return answer
        if self.peer.latency:  # a real server takes its time before it answers 250
            self.peer._in_data(+1)
            try:
                await asyncio.sleep(self.peer.latency)
            finally:
                self.peer._in_data(-1)
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        self.peer._record(parse_message(envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SmtpPeer:
    """A local SMTP server with a memory, a switch and a few bad habits."""

    def __init__(self, host: str = HOST, port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._rejections: dict[str, str] = {}
        self._deferrals: list[str] = []
        self._stalls: dict[str, float] = {}
        self.stalled = 0
        self._sessions = 0
        self.refused = 0  # RCPT and DATA answers that were not 2xx
        self.latency = 0.0  # seconds before each message's 250 (the message counts then)
        self.pipelining = True  # offered in EHLO (read at each session's greeting)
        # Messages waiting for their 250 at once, now and at most (with ``latency``).
        self.in_flight = 0
        self.peak_in_flight = 0
        self._controller: Controller | None = None

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Listen on ``self.port`` (the same port after a ``stop``)."""
        if self._controller is not None:
            return
        controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Close the listening socket and every open session."""
        if self._controller is None:
            return
        self._controller.stop()
        self._controller = None

    # -- what the server does ---------------------------------------------------

    def reject(self, address: str, code: int = 550, text: str | None = None) -> None:
        """Answer ``RCPT TO:<address>`` with ``code`` from now on."""
        text = text or (
            "5.1.1 Recipient address rejected: User unknown"
            if code >= 500
            else "4.2.1 Mailbox temporarily unavailable"
        )
        with self._lock:
            self._rejections[address.lower()] = f"{code} {text}"

    def accept(self, address: str) -> None:
        with self._lock:
            self._rejections.pop(address.lower(), None)

    def defer_next(
        self, count: int = 1, code: int = 451, text: str = "4.3.0 Try again later"
    ) -> None:
        """Answer the next ``count`` messages' end of ``DATA`` with ``code``."""
        with self._lock:
            self._deferrals.extend([f"{code} {text}"] * count)

    def stall(self, address: str, seconds: float) -> None:
        """Hold messages to ``address`` for ``seconds`` at the end of ``DATA``."""
        with self._lock:
            self._stalls[address.lower()] = seconds

    # -- what the server saw ----------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> int:
        with self._lock:
            return self._sessions

    def messages_to(self, address: str) -> list[ReceivedMessage]:
        address = address.lower()
        return [m for m in self.messages if address in (r.lower() for r in m.rcpt_tos)]

    def reset(self) -> None:
        """Forget what was received and every configured misbehaviour."""
        with self._lock:
            self._messages.clear()
            self._rejections.clear()
            self._deferrals.clear()
            self._sessions = 0
            self.refused = 0
            self.peak_in_flight = 0

    def mailer_options(self, timeout: float = 5.0) -> dict[str, Any]:
        """``OPTIONS`` for ``django.core.mail.backends.smtp.EmailBackend``."""
        return {"host": self.host, "port": self.port, "timeout": timeout}

    def mailer(self, timeout: float = 5.0) -> dict[str, Any]:
        """A ``MAILERS`` entry that sends to this peer."""
        return {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": self.mailer_options(timeout),
        }

    # -- called from the handler's thread ------------------------------------------

    def _count_session(self) -> None:
        with self._lock:
            self._sessions += 1

    def _rejection_for(self, address: str) -> str | None:
        with self._lock:
            answer = self._rejections.get(address.lower())
            if answer is not None:
                self.refused += 1
            return answer

    def _stall_for(self, rcpt_tos: list[str]) -> float:
        with self._lock:
            seconds = max((self._stalls.get(r.lower(), 0.0) for r in rcpt_tos), default=0.0)
            if seconds:
                self.stalled += 1
            return seconds

    def _take_deferral(self) -> str | None:
        with self._lock:
            if not self._deferrals:
                return None
            self.refused += 1
            return self._deferrals.pop(0)

    def _in_data(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)


@pytest.fixture
def smtp_peer() -> Iterator[SmtpPeer]:
    """A running SMTP peer on a free port; stopped after the test."""
    peer = SmtpPeer()
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def smtp_mailer(settings, smtp_peer: SmtpPeer) -> SmtpPeer:
    """Point ``MAILERS["default"]`` at the SMTP peer (Django's SMTP backend)."""
    settings.MAILERS = {**settings.MAILERS, "default": smtp_peer.mailer()}
    return smtp_peer
