"""Several sends of one channel in flight at once, for I/O-bound channels.

A provider that answers in 100 ms allows ten sends a second per thread; an SMTP
dialogue is four round trips per message. So a batch hands each send of a
channel whose ``concurrency`` is above 1 to a small pool of threads, each send
on a channel instance of its own (an SMTP session is not thread-safe; each
instance holds its own session or HTTP connection pool), at most
``concurrency`` at once. Everything else stays in the batch's thread: deciding,
rendering, marking in flight and recording, so the database sees one writer
per batch as before, and each outcome is recorded as soon as the batch thread
sees its send return.

``concurrency`` is the ``CONCURRENCY`` key of the channel's entry in
``NOTIFY["CHANNELS"]``, else the channel's own default
(``Channel.default_concurrency``: 8 for email over SMTP or an ESP, 32 for
HTTP webhooks, 1 otherwise), capped by ``NOTIFY["SENDS_IN_FLIGHT"]`` (1 by
default: opt in; a pool lives as long as its batch, so against a fast local
server its session set-ups cost more than the overlap saves).
"""

from __future__ import annotations

import contextvars
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from django.db import connections

from channels.base import Channel, ChannelConfigurationError
from notify import conf
from notify.registry import build_channel


def concurrency_of(alias: str, channel: Channel) -> int:
    """How many sends of ``alias`` a batch may have in flight at once (>= 1)."""
    config = conf.get("CHANNELS").get(alias) or {}
    wanted = config.get("CONCURRENCY")
    if wanted is None:
        wanted = channel.default_concurrency()
    cap = conf.get("SENDS_IN_FLIGHT")
    return max(1, min(int(wanted), int(cap)))


# Seconds a batch waits for a send to return before it opens another channel
# instance (SMTP session, HTTP connection): only a slow provider grows the pool.
GROW_AFTER = 0.002


class Done(NamedTuple):
    """A send that returned: its key, and its result or the exception it raised."""

    key: Any
    result: Any
    error: BaseException | None


class SendPool:
    """Up to ``limit`` sends of channel ``alias`` in flight, each on an instance of its own.

    The batch thread calls ``submit`` and ``finished``/``wait``; results come
    back in the order the sends end. Instances are built as needed (the first
    is the batch's own) and closed by ``close``."""

    def __init__(self, alias: str, first: Channel, limit: int):
        self.alias = alias
        self.limit = limit
        self.in_flight = 0
        self._idle = [first]
        self._all = [first]
        self._done: queue.SimpleQueue[tuple[Done, Channel]] = queue.SimpleQueue()
        self._executor = ThreadPoolExecutor(
            max_workers=limit, thread_name_prefix=f"notify-send-{alias}"
        )

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    @property
    def idle(self) -> int:
        """Instances built and free: a send on one needs no new connection."""
        return len(self._idle)

    def submit(self, key: Any, send: Callable[[Channel], Any]) -> None:
        """Start ``send(channel)`` on a free instance, with the caller's log context."""
        if self.full:
            raise RuntimeError("SendPool.submit with every slot in flight")
        channel = self._idle.pop() if self._idle else self._build()
        context = contextvars.copy_context()
        self.in_flight += 1
        self._executor.submit(context.run, self._run, key, send, channel)

    def _build(self) -> Channel:
        channel = build_channel(self.alias)
        self._all.append(channel)
        return channel

    def _run(self, key: Any, send: Callable[[Channel], Any], channel: Channel) -> None:
        try:
            done = Done(key, send(channel), None)
        except BaseException as exc:  # handed to the batch thread, which decides
            done = Done(key, None, exc)
        finally:
            # A send may touch the database (a suppression, a forgotten device):
            # this pool thread's connection is not kept past its send.
            for conn in connections.all(initialized_only=True):
                conn.close()
        self._done.put((done, channel))

    def _take(self, block: bool, timeout: float | None = None) -> Done | None:
        try:
            done, channel = self._done.get(block=block, timeout=timeout)
        except queue.Empty:
            return None
        self.in_flight -= 1
        if isinstance(done.error, ChannelConfigurationError):
            channel.close()  # not reused: its session may hold the refused credentials
            self._all.remove(channel)
        else:
            self._idle.append(channel)
        return done

    def finished(self) -> list[Done]:
        """The sends that have returned since the last call, without waiting."""
        out = []
        while (done := self._take(block=False)) is not None:
            out.append(done)
        return out

    def wait(self, timeout: float | None = None) -> list[Done]:
        """At least one returned send (waits for one if none has returned yet;
        at most ``timeout`` seconds, then none)."""
        if not self.in_flight:
            return []
        first = self._take(block=True, timeout=timeout)
        if first is None:
            return []
        return [first, *self.finished()]

    def close(self) -> None:
        """Wait for the sends in flight, then close every instance (never raises)."""
        self._executor.shutdown(wait=True)
        for channel in self._all:
            channel.close()
        self._all.clear()
        self._idle.clear()


def send_all(
    batch: list[Any],
    pool: SendPool,
    *,
    prepare: Callable[[Any], Any],
    finish: Callable[[Any, Any], Any],
    mark: Callable[[Any], None],
    record: Callable[[Any], None],
    refuse: Callable[[list[Any], ChannelConfigurationError], list[Any]],
    should_stop: Callable[[], bool],
    context: Callable[[Any], Any],
) -> int | None:
    """Send one channel's ``batch`` with up to ``pool.limit`` sends in flight.

    For each delivery, in the batch thread: ``prepare`` it (decide again,
    render: an outcome or hold to ``record`` at once, or a callable that sends
    it on a channel instance, in a pool thread, and whose answers ``finish``
    maps to an outcome, in the batch thread); take a place in the process's send gate
    (``notify.delivery.gate``), ``mark`` it in flight and start its send. Each
    send that returns is recorded, and its gate place given back, before the
    next one starts. A ``ChannelConfigurationError`` stops the batch: the
    delivery that met it fails with it on record, the ones not started fail
    untried (``refuse``), the ones in flight are recorded as they end.

    Returns the position of the first delivery not started once
    ``should_stop()`` (everything in flight recorded first), else ``None``."""
    from notify.delivery.gate import gate

    refused = False
    position = 0

    def settle(done: list[Done]) -> None:
        nonlocal refused
        for item in done:
            try:
                error = item.error
                if isinstance(error, ChannelConfigurationError):
                    delivery = item.key[0]
                    rest = [delivery] if refused else [delivery, *batch[position:]]
                    refused = True
                    outcomes = refuse(rest, error)
                    for outcome in outcomes:
                        record(outcome)
                elif error is not None:
                    raise error  # not an Exception a send maps (KeyboardInterrupt...)
                else:
                    record(finish(item.key[1], item.result))
            finally:
                gate.leave_shared()

    def settle_all() -> None:
        while pool.in_flight:
            settle(pool.wait())

    try:
        while position < len(batch):
            settle(pool.finished())
            if refused:
                break
            if should_stop():
                settle_all()
                return None if refused else position
            delivery = batch[position]
            with context(delivery):
                prepared = prepare(delivery)
                if not callable(prepared):  # an outcome or a hold: nothing to send
                    position += 1
                    record(prepared)
                    continue
                while pool.full:
                    settle(pool.wait())
                if not pool.idle and pool.in_flight:
                    # A fast provider (a local SMTP server) answers within this:
                    # reuse its session rather than open another per send.
                    settle(pool.wait(timeout=GROW_AFTER))
                if refused:
                    break
                if not gate.enter_shared(wait=False):  # a suspect waits: let it go
                    settle_all()
                    if refused:
                        break
                    gate.enter_shared()
                try:
                    mark(delivery)
                    position += 1
                    pool.submit((delivery, prepared), prepared)
                except BaseException:
                    gate.leave_shared()
                    raise
        settle_all()
        return None
    finally:
        pool.close()  # waits for what is still in flight (after an error only)
        for _item in pool.finished():  # unrecorded: its row stays marked, reaped if lost
            gate.leave_shared()
