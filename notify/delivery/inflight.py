"""The send loop of a batch: sends in flight, each tick one short transaction.

A provider that answers in 100 ms allows ten sends a second per thread; an SMTP
dialogue is four round trips per message. So a batch keeps up to
``concurrency`` sends of a channel in flight, each on a channel instance of its
own (an SMTP session is not thread-safe; each instance holds its own session or
HTTP connection pool), run by a small pool of threads; at a concurrency of 1 the
send runs in the batch thread itself (no thread hand-off). Everything else stays
in the batch thread: deciding, rendering, and writing, so the database sees one
writer per batch.

**Ticks.** Each round of the loop writes, in ONE short transaction (``tick``),
the outcomes of the sends that returned since the last round AND the in-flight
marks of the sends about to start; a send starts only once its mark is
committed, and an outcome is committed no later than the marks of the sends
started after it returned. So a kill -9 leaves marked at most the sends in
flight, plus the ones that returned but were not yet written (still marked):
the extra copies a kill can cause stay bounded by the sends in flight, and at a
concurrency of 1 a delivery costs one write transaction instead of two.

**Batches grow.** A worker's batch (``more``) whose deliveries have all
started claims more of its channel's due deliveries under its claim while its
sends drain, so the slots stay busy instead of emptying before the next claim;
never at one send at a time, nor for a queuing channel.

**Pools outlive their batch.** ``pool_for(alias)`` keeps one ``SendPool`` per
channel alias and worker thread, with its threads and channel instances (open
SMTP sessions, HTTP sessions) for the life of the thread: a new batch reuses
them; a failed session reconnects on its next send (the channel's own rule);
``close_pools`` closes this thread's (a worker thread as it stops,
``run_until_idle`` at its end; a process that exits closes the rest). A change of settings (``setting_changed``, or a different channel
entry, ``SENDS_IN_FLIGHT`` or ``MAILERS``) builds a new pool. A queuing channel
(``queues_sends``: in-app) gets a fresh instance per batch, as its ``flush`` is
per batch.

``concurrency`` is the ``CONCURRENCY`` key of the channel's entry in
``NOTIFY["CHANNELS"]``, else the channel's own default
(``Channel.default_concurrency``: 8 for email over SMTP or an ESP, 32 for
HTTP webhooks, 1 otherwise), capped by ``NOTIFY["SENDS_IN_FLIGHT"]``.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections

from channels.base import Channel, ChannelConfigurationError
from notify import conf
from notify.registry import build_channel

log = logging.getLogger("notify.delivery.inflight")


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


# Sends started per tick at most: the first of a batch's many sends in flight
# go out after a few renders, not after all of them.
STARTS_PER_TICK = 8


class Done(NamedTuple):
    """A send that returned: its key, and its result or the exception it raised."""

    key: Any
    result: Any
    error: BaseException | None


class SendPool:
    """Up to ``limit`` sends of channel ``alias`` in flight, each on an instance of its own.

    The batch thread calls ``submit`` and ``finished``/``wait``; results come
    back in the order the sends end. Instances are built as needed and kept
    (with their sessions) until ``close``. At ``limit`` 1 a send runs in the
    caller's thread, its result queued as a pool thread's would be."""

    def __init__(self, alias: str, limit: int, key: Any = None, first: Channel | None = None):
        self.alias = alias
        self.limit = limit
        self.key = key
        self.provider_name = (first.provider_name if first is not None else "") or ""
        self.in_flight = 0
        self._idle: list[Channel] = [first] if first is not None else []
        self._all: list[Channel] = list(self._idle)
        self._done: queue.SimpleQueue[tuple[Done, Channel]] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None

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
        self.in_flight += 1
        if self.limit == 1:
            self._done.put((_run(key, send, channel, in_pool=False), channel))
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.limit, thread_name_prefix=f"notify-send-{self.alias}"
            )
        context = contextvars.copy_context()
        self._executor.submit(context.run, self._in_thread, key, send, channel)

    def prefill(self) -> None:
        """Build instances up to ``limit`` now, instead of as sends prove slow:
        for a sender whose own tick, not the provider, is the slow part (digests:
        a commit per tick, fewer the more sends each tick records)."""
        while len(self._all) < self.limit:
            self._idle.append(self._build())

    def _build(self) -> Channel:
        channel = build_channel(self.alias)
        self._all.append(channel)
        return channel

    def _in_thread(self, key: Any, send: Callable[[Channel], Any], channel: Channel) -> None:
        self._done.put((_run(key, send, channel, in_pool=True), channel))

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

    def wait(self, timeout: float | None = None, gather: float = 0.0) -> list[Done]:
        """At least one returned send (waits for one if none has returned yet;
        at most ``timeout`` seconds, then none). ``gather``: once one has
        returned, up to that many seconds more for others (one commit for them)."""
        if not self.in_flight:
            return []
        first = self._take(block=True, timeout=timeout)
        if first is None:
            return []
        out = [first, *self.finished()]
        deadline = time.monotonic() + gather
        while gather and self.in_flight and (left := deadline - time.monotonic()) > 0:
            more = self._take(block=True, timeout=left)
            if more is None:
                break
            out.append(more)
        return out

    def drain(self) -> list[Done]:
        """Wait for every send in flight; return them."""
        out = []
        while self.in_flight:
            out += self.wait()
        return out

    def close(self) -> None:
        """Wait for the sends in flight, then close every instance (never raises)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.finished()
        for channel in self._all:
            try:
                channel.close()
            except Exception:  # a failed QUIT must not stop the others closing
                log.exception("closing a channel instance of '%s' failed", self.alias)
        self._all.clear()
        self._idle.clear()


def _run(key: Any, send: Callable[[Channel], Any], channel: Channel, in_pool: bool) -> Done:
    try:
        return Done(key, send(channel), None)
    except BaseException as exc:  # handed to the batch thread, which decides
        return Done(key, None, exc)
    finally:
        if in_pool:
            # A send may touch the database (a rate limit in a database cache):
            # a pool thread's connection is not kept past its send.
            for conn in connections.all(initialized_only=True):
                conn.close()


# -- pools kept per worker thread --------------------------------------------------------

_local = threading.local()
_generation = 0


def _settings_changed(**kwargs: Any) -> None:
    global _generation
    _generation += 1


setting_changed.connect(_settings_changed, dispatch_uid="notify.delivery.inflight")


def _pools() -> dict[str, SendPool]:
    pools = getattr(_local, "pools", None)
    if pools is None:
        pools = _local.pools = {}
    return pools


def pool_for(alias: str, channel: Channel | None = None) -> SendPool:
    """This thread's send pool for ``alias``, kept across batches (a new one
    when the settings changed). ``channel``: an instance to start it with."""
    config = conf.get("CHANNELS").get(alias)
    key = (
        _generation,
        repr(config),
        conf.get("SENDS_IN_FLIGHT"),
        repr(getattr(settings, "MAILERS", None)),
    )
    pools = _pools()
    pool = pools.get(alias)
    if pool is not None and pool.key != key:
        pool.close()
        pool = None
    if pool is None:
        first = channel or build_channel(alias)
        pool = pools[alias] = SendPool(alias, concurrency_of(alias, first), key, first)
    return pool


def close_pools() -> None:
    """Close this thread's send pools and their sessions."""
    pools = _pools()
    for pool in pools.values():
        pool.close()
    pools.clear()


# -- the send loop ------------------------------------------------------------------------


def send_all(
    batch: list[Any],
    pool: SendPool,
    *,
    prepare: Callable[[Any], Any],
    finish: Callable[[Any, Any], Any],
    tick: Callable[[list[Any], list[Any]], None],
    refuse: Callable[[list[Any], ChannelConfigurationError], list[Any]],
    should_stop: Callable[[], bool],
    context: Callable[[Any], Any],
    alone: Callable[[Any], bool] = lambda _delivery: False,
    flush: Callable[[list[Any]], None] | None = None,
    more: Callable[[int], list[Any]] | None = None,
    gather: float = 0.0,
) -> int | None:
    """Send one channel's ``batch`` with up to ``pool.limit`` sends in flight.

    For each delivery, in the batch thread: ``prepare`` it (decide again,
    render: an outcome or hold, or a callable that sends it on a channel
    instance and whose answers ``finish`` maps to an outcome); take a place in
    the process's send gate (``notify.delivery.gate``; an exclusive one for a
    delivery to send ``alone``, a suspect, once nothing else of the batch is in
    flight); start it once its mark is written. Each round writes, in one
    ``tick(results, starting)``, the outcomes and holds known since the last
    (``results``) and marks ``starting`` in flight; gate places of the sends
    recorded are given back after it. A ``ChannelConfigurationError`` stops the
    batch: the delivery that met it fails with it on record, the ones not
    started fail untried (``refuse``), the ones in flight are recorded as they
    end.

    ``flush`` (a queuing channel: its sends are made at flush): nothing is
    marked, the results are written once, after ``flush(results)`` (which may
    turn a "sent" into the error of a failed flush).

    ``more(n)`` (a worker's batch): once ``batch`` is exhausted while sends
    are in flight, claim up to ``n`` more of the channel's due deliveries
    under the batch's claim and append them (``grow``), until ``should_stop()``.

    ``gather`` (digests on PostgreSQL): once a send has returned, wait up to
    that many seconds for more before the tick, so one commit records them.

    Returns the position of the first delivery not started once
    ``should_stop()`` (everything in flight recorded first), else ``None``."""
    from notify.delivery.gate import gate

    deferred = flush is not None
    results: list[Any] = []  # outcomes and holds known, not written yet
    places: list[bool] = []  # gate places of the sends in ``results`` (True: exclusive)
    held: list[bool] = []  # gate places of the sends in flight
    refused = False
    position = 0  # the first delivery neither started nor decided
    ready: tuple[Any, Any] | None = None  # batch[position], prepared, waiting for a gate place
    may_grow = False
    claiming = more is not None and pool.limit > 1 and not deferred

    def grow(busy: int) -> bool:
        """Claim more of the channel's due deliveries into the batch while
        ``busy`` sends are in flight (or starting) and a quarter of the slots
        or more are free: the slots stay busy instead of draining before the
        next claim. Not once ``should_stop()``, nor after a claim found nothing."""
        nonlocal claiming
        free = pool.limit - busy
        if not claiming or not busy or free < max(1, pool.limit // 4) or should_stop():
            return False
        claimed = more(free)  # type: ignore[misc]
        claiming = bool(claimed)
        batch.extend(claimed)
        return claiming

    def settle(done: list[Done]) -> None:
        nonlocal refused
        for item in done:
            delivery, send = item.key
            places.append(held.pop())
            error = item.error
            if isinstance(error, ChannelConfigurationError):
                rest = [delivery] if refused else [delivery, *batch[position:]]
                refused = True
                results.extend(refuse(rest, error))
            elif error is not None:
                raise error  # not an Exception a send maps (KeyboardInterrupt...)
            else:
                results.append(finish(send, item.result))

    def write(starting: list[Any], final: bool = False) -> None:
        if deferred and not final:
            give_back()  # a queued send is made at flush: no place held until then
            return
        if deferred and results:
            flush(results)
        if results or starting:
            tick(list(results), [] if deferred else starting)
        results.clear()
        give_back()

    def give_back() -> None:
        while places:
            if places.pop():
                gate.leave_exclusive()
            else:
                gate.leave_shared()

    def settle_all() -> None:
        while pool.in_flight:
            settle(pool.wait())

    stopped: int | None = None
    try:
        while True:
            settle(pool.finished())
            starting: list[tuple[Any, Any]] = []
            exclusive = bool(held) and held[-1]
            wants_instance = False
            while (
                not refused
                and not exclusive
                and len(held) + len(starting) < pool.limit
                and len(starting) < STARTS_PER_TICK
            ):
                if ready is None:
                    if position >= len(batch) and not grow(len(held)):
                        break
                    if should_stop():
                        stopped = position
                        break
                    delivery = batch[position]
                    if alone(delivery) and (held or starting):
                        break  # it goes once nothing else of the batch is in flight
                    with context(delivery):
                        prepared = prepare(delivery)
                    if not callable(prepared):  # an outcome or a hold: nothing to send
                        results.append(prepared)
                        position += 1
                        continue
                    ready = (delivery, prepared)
                if pool.idle <= len(starting) and (held or starting) and not may_grow:
                    wants_instance = True  # a new one only if those in flight are slow
                    break
                delivery = ready[0]
                if alone(delivery):
                    if starting:
                        break
                    settle_all()
                    write([])  # give back what this batch holds before it waits
                    if refused:
                        break
                    gate.enter_exclusive()
                    exclusive = True
                elif not gate.enter_shared(wait=False):  # a suspect waits: let it go
                    if starting:
                        break
                    settle_all()
                    write([])
                    if refused:
                        break
                    gate.enter_shared()
                held.append(exclusive)
                starting.append(ready)
                ready = None
                position += 1
                may_grow = False
            write([d for d, _ in starting])
            for item in starting:
                pool.submit(item, item[1])
            if refused or stopped is not None:
                break
            if not pool.in_flight and ready is None and position >= len(batch):
                break
            if starting:
                continue
            if not pool.in_flight:  # cannot happen: nothing started, nothing to wait for
                raise RuntimeError("send loop: nothing in flight and nothing could start")
            if wants_instance:  # a free slot, no free instance: grow if none returns soon
                done = pool.wait(timeout=GROW_AFTER)
                settle(done)
                may_grow = not done
            else:
                settle(pool.wait(gather=gather))
        settle_all()
        write([], final=True)
        return None if refused else stopped
    finally:
        pool.drain()  # after an error: what is in flight stays unrecorded, its row
        # marked in flight (reaped if this worker is lost; else its claim expires)
        places.extend(held)
        held.clear()
        give_back()
