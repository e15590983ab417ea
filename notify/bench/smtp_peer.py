"""A local SMTP server that accepts everything and counts, in a process of its own.

It runs aiosmtpd in a forked process rather than a thread of the benchmark:
an in-process server competes with the worker for the GIL on every SMTP round
trip, which measured 170-220 emails/s through one Django SMTP connection
against 330-350 emails/s with the server in its own process (2 cores, 500
emails). The peer should not be part of what is measured.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from typing import Any


class CountingHandler:
    """An aiosmtpd handler: accept, count messages and bytes, keep nothing."""

    def __init__(self, messages: Any, size: Any) -> None:
        self.messages = messages  # multiprocessing.Value("q"), shared with the parent
        self.size = size

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.messages.get_lock():
            self.messages.value += 1
        with self.size.get_lock():
            self.size.value += len(envelope.content or b"")
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(port: int, messages: Any, size: Any, ready: Any, stop: Any) -> None:
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every line
    controller = Controller(CountingHandler(messages, size), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SmtpPeer:
    """``start()`` it, send mail to ``127.0.0.1:port``, read ``messages``, ``stop()``."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.port = free_port()
        self._messages = context.Value("q", 0)
        self._size = context.Value("q", 0)
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve,
            args=(self.port, self._messages, self._size, self._ready, self._stop),
            name="notify-bench-smtp",
            daemon=True,
        )

    @property
    def messages(self) -> int:
        return self._messages.value

    @property
    def bytes(self) -> int:
        return self._size.value

    def start(self, timeout: float = 10.0) -> None:
        self._process.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the local SMTP server did not start within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        """The message count once it reaches ``count`` (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while self.messages < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.messages
