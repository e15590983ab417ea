"""A local HTTP provider that counts what it receives, per delivery id.

Built on the shared peer (``tests.peers.http.HttpPeer``). Every POST carries
``X-Notify-Delivery``; the provider records each arrival (time, answer) under
that id, so a test can say how many deliveries reached it, how many twice,
and how long notify waited between two tries.

Faults, for the fault tests: ``Faults(unavailable=0.3, hang=0.1, refuse=0.1)``
answers 503 to 30 % of requests, holds 10 % past the client's time-out, and
refuses 10 % for good (422). The draw is a hash of (delivery id, try number),
so a run is reproducible and each try of a delivery draws afresh.

``CountingChannel`` is the channel that posts to it: the HTTP webhook base
(``channels.http``) with a fixed URL from its options instead of a contact
point (``address_kind = None``: every user can receive it), and the delivery
id header. ``OPTIONS``: ``URL``, ``TIMEOUT`` and, for crash tests,
``KILL_ON`` (text that makes the sending process kill itself with SIGKILL: a
poison message).

Fixture: ``counting_provider``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from channels.base import OutgoingMessage
from channels.breaker import BREAKER_OPTIONS
from channels.http import HTTP_OPTIONS, HttpWebhookChannel
from tests.peers.http import HttpPeer, Reply, Request, running


@dataclass(frozen=True)
class Faults:
    unavailable: float = 0.0  # share answered 503 (retry)
    hang: float = 0.0  # share held for ``hang_seconds`` (the client times out; retry)
    refuse: float = 0.0  # share answered 422 (permanent)
    hang_seconds: float = 2.0

    def draw(self, delivery: str, attempt: int) -> str:
        digest = hashlib.sha256(f"{delivery}:{attempt}".encode()).digest()
        roll = int.from_bytes(digest[:8], "big") / 2**64
        for outcome, share in (
            ("unavailable", self.unavailable),
            ("hang", self.hang),
            ("refuse", self.refuse),
        ):
            if roll < share:
                return outcome
            roll -= share
        return "ok"


@dataclass(frozen=True)
class Arrival:
    at: float  # time.time() when it arrived
    outcome: str  # ok, unavailable, hang, refuse


class CountingProvider(HttpPeer):
    def __init__(self, faults: Faults | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.faults = faults or Faults()
        self._arrivals: dict[str, list[Arrival]] = defaultdict(list)
        self._count_lock = threading.Lock()
        self.latency = 0.0  # seconds before each answer (a provider taking its time)
        self.in_flight = 0  # requests waiting for their answer, now and at most
        self.peak_in_flight = 0

    @property
    def url(self) -> str:
        return f"{self.base_url}/deliver"

    def _connected(self, sock) -> int:
        # The base handler writes headers and body separately: without
        # TCP_NODELAY, Nagle's algorithm and the client's delayed ACK hold each
        # answer for 40 ms, and the provider, not notify, is what is measured.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super()._connected(sock)

    def answer(self, request: Request) -> Reply:
        delivery = request.header("x-notify-delivery")
        if not delivery:
            return Reply(400, {"error": "no X-Notify-Delivery header"})
        with self._count_lock:
            attempt = len(self._arrivals[delivery]) + 1
            outcome = self.faults.draw(delivery, attempt)
            self._arrivals[delivery].append(Arrival(time.time(), outcome))
        if self.latency:
            with self._count_lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            time.sleep(self.latency)
            with self._count_lock:
                self.in_flight -= 1
        if outcome == "unavailable":
            return Reply(503, {"error": "try again"})
        if outcome == "refuse":
            return Reply(422, {"error": "refused"})
        if outcome == "hang":
            time.sleep(self.faults.hang_seconds)
        return Reply(200, {"id": f"msg-{delivery}-{attempt}"})

    # -- what it received ------------------------------------------------------------

    def arrivals(self) -> dict[int, list[Arrival]]:
        with self._count_lock:
            return {int(k): list(v) for k, v in self._arrivals.items()}

    def accepted(self) -> Counter:
        """Delivery id -> how many times it was accepted (answered 200 in time or not)."""
        with self._count_lock:
            return Counter(
                {
                    int(k): sum(a.outcome in ("ok", "hang") for a in v)
                    for k, v in self._arrivals.items()
                }
            )

    def received(self) -> int:
        with self._count_lock:
            return len(self._arrivals)


class CountingChannel(HttpWebhookChannel):
    """POST ``{"id", "subject", "text"}`` to the counting provider's URL."""

    address_kind = None
    message_format = "chat"
    provider_name = "counting"
    accepted_options = HTTP_OPTIONS | BREAKER_OPTIONS | {"URL", "KILL_ON"}

    def __init__(self, alias: str, **options: Any):
        options = {"ALLOW_HTTP": True, "ALLOWED_HOSTS": ["127.0.0.1"], **options}
        super().__init__(alias, **options)
        self.url = options.get("URL") or ""
        self.kill_on = options.get("KILL_ON") or ""

    def target_url(self, message: OutgoingMessage) -> str:
        return self.url_policy.check(self.url, self.provider_name)

    def build_payload(self, message: OutgoingMessage) -> dict[str, Any]:
        if self.kill_on and self.kill_on in message.text:
            os.kill(os.getpid(), signal.SIGKILL)  # a poison message: the worker dies on it
        return {"id": message.delivery_id, "subject": message.subject, "text": message.text}


@pytest.fixture
def counting_provider() -> Iterator[CountingProvider]:
    yield from running(CountingProvider)
