"""A local SMTP server that accepts everything and counts, in a process of its own.

It runs aiosmtpd in a forked process rather than a thread of the benchmark:
an in-process server competes with the worker for the GIL on every SMTP round
trip, which measured 170-220 emails/s through one Django SMTP connection
against 330-350 emails/s with the server in its own process (2 cores, 500
emails). The peer should not be part of what is measured.

It offers PIPELINING (RFC 2920) like the mail servers it stands for; Django's
own backend (the baseline) does not use it, notify's bytes path does
(``channels.email.sendmail``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from bench.forked_peer import ForkedPeer


class CountingHandler:
    """An aiosmtpd handler: accept, count messages and bytes, keep nothing."""

    def __init__(self, messages: Any, size: Any, latency: float = 0.0) -> None:
        self.messages = messages  # multiprocessing.Value("q"), shared with the parent
        self.size = size
        self.latency = latency  # seconds before each 250 (the inflight workload)

    async def handle_EHLO(self, server, session, envelope, hostname, responses) -> list[str]:
        """Offer PIPELINING (RFC 2920), as Postfix, Exim and ESP relays do:
        aiosmtpd reads pipelined commands in order but does not say so."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        with self.messages.get_lock():
            self.messages.value += 1
        with self.size.get_lock():
            self.size.value += len(envelope.content or b"")
        return "250 OK"


def _serve(
    port: int, messages: Any, size: Any, ready: Any, stop: Any, latency: float = 0.0
) -> None:
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every line
    controller = Controller(
        CountingHandler(messages, size, latency), hostname="127.0.0.1", port=port
    )
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpPeer(ForkedPeer):
    """``start()`` it, send mail to ``127.0.0.1:port``, read ``messages``, ``stop()``."""

    kind = "SMTP"

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__(functools.partial(_serve, latency=latency), "messages", "bytes")

    @property
    def messages(self) -> int:
        return self.counter("messages")

    @property
    def bytes(self) -> int:
        return self.counter("bytes")
