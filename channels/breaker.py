"""Circuit breakers shared by every worker, over Django's cache framework.

A breaker guards one provider (Slack's Web API, Twilio, an ESP) or one webhook
host, so that a receiver that is down gets a bounded number of requests
instead of one per due delivery, while a provider that is flaky but working
keeps getting its traffic. It judges the failure *rate* over a sliding
window, as resilience4j and pybreaker's rate mode do, rather than a short run
of failures (five in a row, which a provider failing one request in three
hits every few hundred requests):

* **closed**: requests go through. Each outcome is counted in the current
  slice of a ``WINDOW``-second sliding window (six slices): a failure (no
  connection, a time-out, a 5xx) as a failed call, any answer from the
  provider (a success, a permanent refusal, a 429) as a call;
* **open**: once the window holds at least ``MINIMUM_CALLS`` calls (default
  20) of which at least ``FAILURE_RATE`` (default 0.7) failed — or
  ``MINIMUM_CALLS`` failures come in a row, so that a provider that goes down
  after a healthy spell opens at once rather than once its successes slide
  out of the window — the breaker opens for ``COOL_DOWN`` seconds (default
  60); no request is made and the send raises :class:`CircuitOpen`, a
  :class:`channels.base.Deferred` whose ``retry_after`` is the end of the
  cool-down: the outbox reschedules the delivery then, without counting an
  attempt;
* **half-open**: after the cool-down one worker wins a ``cache.add`` and makes
  one trial request; success closes the breaker with an empty window, failure
  opens it for another cool-down. Other sends wait (``TRIAL_WAIT`` seconds)
  while the trial runs.

So a receiver that is down for ``T`` seconds gets at most
``MINIMUM_CALLS + ceil(T / COOL_DOWN)`` requests (plus one per worker thread
already in flight when it opened), whatever the number of deliveries; one
that fails a third of its requests stays closed (a 20-call window crosses
70 % about once in a thousand fresh windows; 20 failures in a row come about
once in three billion requests).

State lives in the cache under ``notify:circuit:<name>`` (Redis when several
processes send; the embedded default's local-memory cache serves its one
process). If the cache fails, the breaker lets requests through and logs:
losing the breaker is better than losing messages. The channel options that
configure it (:data:`BREAKER_OPTIONS`): ``FAILURE_RATE``, ``MINIMUM_CALLS``,
``WINDOW``, ``COOL_DOWN`` and ``CACHE`` (the ``CACHES`` alias, default
``"default"``). ``FAILURE_THRESHOLD``, the former option, is still read as
``MINIMUM_CALLS``: a provider that is down opens the breaker after that many
failures, as before.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import (
    ChannelConfigurationError,
    ChannelError,
    Deferred,
    ProviderRateLimited,
    TransientError,
)
from .ratelimit import cache_named

log = logging.getLogger("channels.breaker")

DEFAULT_FAILURE_RATE = 0.7  # failed share of the window's calls that opens a breaker
DEFAULT_MINIMUM_CALLS = 20  # calls the window must hold before its rate counts
DEFAULT_WINDOW = 60.0  # seconds of the sliding window
DEFAULT_COOL_DOWN = 60.0  # seconds a breaker stays open before a trial
SLICES = 6  # the window slides by a sixth of itself
TRIAL_WAIT = 5.0  # seconds a send waits while another worker's trial runs
# The options of a channel with a breaker (see Channel.accepted_options).
BREAKER_OPTIONS = frozenset(
    {"FAILURE_RATE", "MINIMUM_CALLS", "WINDOW", "FAILURE_THRESHOLD", "COOL_DOWN", "CACHE"}
)


def clock() -> float:
    """The time breakers go by (a test replaces it to simulate minutes)."""
    return time.time()


class CircuitOpen(Deferred):
    """The breaker of this provider or host is open: no request was made."""


@dataclass(frozen=True, slots=True)
class Gate:
    """What a breaker said about one send."""

    allowed: bool
    trial: bool = False  # the one half-open trial send
    run: int = 0  # failures in a row so far (closed state)
    retry_after: float | None = None  # when not allowed: seconds until a trial may run


class CircuitBreaker:
    """One provider's or host's breaker, kept in a Django cache under
    ``notify:circuit:<name>``."""

    def __init__(
        self,
        name: str,
        *,
        minimum_calls: int = DEFAULT_MINIMUM_CALLS,
        failure_rate: float = DEFAULT_FAILURE_RATE,
        window: float = DEFAULT_WINDOW,
        cool_down: float = DEFAULT_COOL_DOWN,
        cache_alias="default",
    ):
        self.name = name
        self.minimum_calls = minimum_calls
        self.failure_rate = failure_rate
        self.window = window
        self.cool_down = cool_down
        self.cache_alias = cache_alias
        self._slice = max(window / SLICES, 0.001)
        self._prefix = prefix = f"notify:circuit:{name}"
        self._open_until = f"{prefix}:open_until"
        self._trial = f"{prefix}:trial"
        self._run = f"{prefix}:run"

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any], where: str) -> CircuitBreaker:
        """The breaker a channel's options describe (see the module docstring)."""
        return cls(name, **breaker_settings(where, options))

    @property
    def _cache(self):
        return cache_named(self.cache_alias)

    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (for admin pages and tests)."""
        open_until = self._cache.get(self._open_until)
        if open_until is None:
            return "closed"
        return "open" if clock() < open_until else "half-open"

    def allow(self) -> Gate:
        cache = self._cache
        try:
            found = cache.get_many([self._open_until, self._run])
            open_until = found.get(self._open_until)
            if open_until is None:
                return Gate(True, run=int(found.get(self._run) or 0))
            now = clock()
            if now < open_until:
                return Gate(False, retry_after=open_until - now)
            # Half-open: exactly one worker gets the trial; the lock expires in
            # case that worker dies mid-send.
            if cache.add(self._trial, now, timeout=math.ceil(max(self.cool_down, 1.0))):
                return Gate(True, trial=True)
            return Gate(False, retry_after=None)
        except ChannelConfigurationError:
            raise
        except Exception as exc:
            log.warning("circuit breaker %s not applied, the cache failed: %s", self.name, exc)
            return Gate(True)

    def record_success(self, gate: Gate) -> None:
        """The provider answered (sent, or refused the message itself): a call
        in the window; after the trial, the breaker closes with an empty window."""
        if gate.trial:
            self._quietly(lambda cache: self._close(cache))
            log.info("circuit %s closed: the trial send went through", self.name)
            return

        def count(cache: Any) -> None:
            self._count(cache, failed=False)
            if gate.run:  # the run of failures is over
                cache.delete(self._run)

        self._quietly(count)

    def record_failure(self, gate: Gate) -> None:
        """A transient failure: count it; open the breaker once the window's
        failure rate reaches ``failure_rate`` over at least ``minimum_calls``."""

        def count(cache: Any) -> None:
            if gate.trial:
                self._open(cache, "the half-open trial send failed")
                cache.delete(self._trial)
                return
            self._count(cache, failed=True)
            run = self._incr(cache, self._run, math.ceil(self.window))
            calls, failures = self.window_counts(cache)
            if run >= self.minimum_calls:
                why = f"{run} failures in a row"
            elif calls >= self.minimum_calls and failures >= self.failure_rate * calls:
                why = f"{failures} of the last {calls} calls failed"
            else:
                return
            self._open(cache, why)
            cache.delete_many([self._run, *self._slice_keys()])

        self._quietly(count)

    def window_counts(self, cache: Any = None) -> tuple[int, int]:
        """(calls, failures) in the sliding window now."""
        cache = cache if cache is not None else self._cache
        found = cache.get_many(self._slice_keys())
        calls = sum(int(v) for k, v in found.items() if k.endswith(":calls"))
        return calls, sum(int(v) for k, v in found.items() if k.endswith(":failures"))

    def _slice_keys(self) -> list[str]:
        current = int(clock() // self._slice)
        return [
            f"{self._prefix}:{n}:{kind}"
            for n in range(current - SLICES + 1, current + 1)
            for kind in ("calls", "failures")
        ]

    def _count(self, cache: Any, failed: bool) -> None:
        current = int(clock() // self._slice)
        timeout = math.ceil(self.window + self._slice) + 1  # a slice outlives its window
        for kind in ("calls", "failures") if failed else ("calls",):
            self._incr(cache, f"{self._prefix}:{current}:{kind}", timeout)

    @staticmethod
    def _incr(cache: Any, key: str, timeout: int) -> int:
        if cache.add(key, 1, timeout=timeout):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=timeout)
            return 1

    def _close(self, cache: Any) -> None:
        cache.delete_many([self._open_until, self._trial, self._run, *self._slice_keys()])

    def release(self, gate: Gate) -> None:
        """The send never reached the provider (our own rate limit): hand back
        the trial, change nothing else."""
        if gate.trial:
            self._quietly(lambda cache: cache.delete(self._trial))

    def reset(self) -> None:
        self._quietly(self._close)

    def call[R](self, send: Callable[[], R], provider: str = "") -> R:
        """``send()`` behind this breaker: raise :class:`CircuitOpen` without
        calling it while the breaker is open; count what it raises."""
        gate = self.allow()
        if not gate.allowed:
            wait = gate.retry_after if gate.retry_after is not None else TRIAL_WAIT
            raise CircuitOpen(
                f"circuit {self.name} is open after repeated failures; next trial in {wait:.1f}s",
                code="circuit_open",
                provider=provider,
                retry_after=max(wait, 0.001),
            )
        try:
            result = send()
        except Deferred:  # never reached the provider
            self.release(gate)
            raise
        except ProviderRateLimited:  # it answered: alive
            self.record_success(gate)
            raise
        except TransientError:
            self.record_failure(gate)
            raise
        except ChannelError:  # a permanent refusal: the provider answered
            self.record_success(gate)
            raise
        except BaseException:  # configuration or a bug: says nothing about the provider
            self.release(gate)
            raise
        self.record_success(gate)
        return result

    def _open(self, cache: Any, why: str) -> None:
        until = clock() + self.cool_down
        cache.set(self._open_until, until, timeout=math.ceil(self.cool_down + self.window) + 3600)
        log.warning("circuit %s open for %ss: %s", self.name, self.cool_down, why)

    def _quietly(self, action) -> None:
        cache = self._cache
        try:
            action(cache)
        except Exception as exc:
            log.warning("circuit breaker %s not updated, the cache failed: %s", self.name, exc)


def guarded[T](breaker: CircuitBreaker | None, send: Callable[[], T], provider: str = "") -> T:
    """``send()`` behind ``breaker``; straight through when there is none (a
    provider channel inside a failover channel, whose breakers decide)."""
    return send() if breaker is None else breaker.call(send, provider)


def breaker_settings(where: str, options: dict[str, Any]) -> dict[str, Any]:
    """A breaker's keyword arguments from channel options (``FAILURE_THRESHOLD``
    is the former name of ``MINIMUM_CALLS``); a bad value is a configuration error."""
    rate = number(where, options, "FAILURE_RATE", DEFAULT_FAILURE_RATE, float, 0.01)
    if rate > 1:
        raise ChannelConfigurationError(f"{where}: OPTIONS['FAILURE_RATE'] must be at most 1.")
    key = "MINIMUM_CALLS" if "MINIMUM_CALLS" in options else "FAILURE_THRESHOLD"
    return {
        "minimum_calls": number(where, options, key, DEFAULT_MINIMUM_CALLS, int, 1),
        "failure_rate": rate,
        "window": number(where, options, "WINDOW", DEFAULT_WINDOW, float, 1),
        "cool_down": number(where, options, "COOL_DOWN", DEFAULT_COOL_DOWN, float, 0),
        "cache_alias": options.get("CACHE", "default"),
    }


def number(where: str, options: dict, key: str, default: Any, kind: type, minimum: float):
    """``options[key]`` as a ``kind`` >= ``minimum``, or a configuration error."""
    value = options.get(key, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise ChannelConfigurationError(
            f"{where}: OPTIONS['{key}'] must be a number >= {minimum:g}."
        )
    return value
