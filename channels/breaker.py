"""Circuit breakers shared by every worker, over Django's cache framework.

A breaker guards one provider (Slack's Web API, Twilio, an ESP) or one webhook
host, so that a receiver that is down gets a bounded number of requests
instead of one per due delivery:

* **closed**: requests go through; each failure (no connection, a time-out, a
  5xx) counts, any answer from the provider (a success, a permanent refusal,
  a 429) resets the count;
* **open**: ``FAILURE_THRESHOLD`` consecutive failures (default 5) open it for
  ``COOL_DOWN`` seconds (default 60); no request is made and the send raises
  :class:`CircuitOpen`, a :class:`channels.base.Deferred` whose
  ``retry_after`` is the end of the cool-down: the outbox reschedules the
  delivery then, without counting an attempt;
* **half-open**: after the cool-down one worker wins a ``cache.add`` and makes
  one trial request; success closes the breaker, failure opens it for another
  cool-down. Other sends wait (``TRIAL_WAIT`` seconds) while the trial runs.

So a receiver that is down for ``T`` seconds gets at most
``FAILURE_THRESHOLD + ceil(T / COOL_DOWN)`` requests (plus one per worker
thread already in flight when it opened), whatever the number of deliveries.

State lives in the cache under ``notify:circuit:<name>`` (Redis when several
processes send; the embedded default's local-memory cache serves its one
process). If the cache fails, the breaker lets requests through and logs:
losing the breaker is better than losing messages. The channel options that
configure it (:data:`BREAKER_OPTIONS`): ``FAILURE_THRESHOLD``, ``COOL_DOWN``
and ``CACHE`` (the ``CACHES`` alias, default ``"default"``).
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

DEFAULT_THRESHOLD = 5  # consecutive failures that open a breaker
DEFAULT_COOL_DOWN = 60.0  # seconds a breaker stays open before a trial
TRIAL_WAIT = 5.0  # seconds a send waits while another worker's trial runs
# Consecutive failures older than this with no send at all are forgotten.
FAILURE_MEMORY = 3600
# The options of a channel with a breaker (see Channel.accepted_options).
BREAKER_OPTIONS = frozenset({"FAILURE_THRESHOLD", "COOL_DOWN", "CACHE"})


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
    failures: int = 0  # consecutive failures so far (closed state)
    retry_after: float | None = None  # when not allowed: seconds until a trial may run


class CircuitBreaker:
    """One provider's or host's breaker, kept in a Django cache under
    ``notify:circuit:<name>``."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cool_down: float = DEFAULT_COOL_DOWN,
        cache_alias="default",
    ):
        self.name = name
        self.threshold = threshold
        self.cool_down = cool_down
        self.cache_alias = cache_alias
        prefix = f"notify:circuit:{name}"
        self._failures = f"{prefix}:failures"
        self._open_until = f"{prefix}:open_until"
        self._trial = f"{prefix}:trial"

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any], where: str) -> CircuitBreaker:
        """The breaker a channel's options describe (see the module docstring)."""
        return cls(
            name,
            threshold=number(where, options, "FAILURE_THRESHOLD", DEFAULT_THRESHOLD, int, 1),
            cool_down=number(where, options, "COOL_DOWN", DEFAULT_COOL_DOWN, float, 0),
            cache_alias=options.get("CACHE", "default"),
        )

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
            found = cache.get_many([self._failures, self._open_until])
            open_until = found.get(self._open_until)
            if open_until is None:
                return Gate(True, failures=int(found.get(self._failures) or 0))
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
        """The provider answered (sent, or refused the message itself): close."""
        if gate.trial or gate.failures:
            self._quietly(
                lambda cache: cache.delete_many([self._failures, self._open_until, self._trial])
            )
            if gate.trial:
                log.info("circuit %s closed: the trial send went through", self.name)

    def record_failure(self, gate: Gate) -> None:
        """A transient failure: count it; open the breaker at the threshold."""

        def count(cache: Any) -> None:
            if gate.trial:
                self._open(cache, "the half-open trial send failed")
                cache.delete(self._trial)
                return
            cache.add(self._failures, 0, timeout=FAILURE_MEMORY)
            try:
                failures = cache.incr(self._failures)
            except ValueError:  # expired between add and incr
                failures = 1
                cache.set(self._failures, 1, timeout=FAILURE_MEMORY)
            if failures >= self.threshold:
                self._open(cache, f"{failures} consecutive transient failures")
                cache.delete(self._failures)

        self._quietly(count)

    def release(self, gate: Gate) -> None:
        """The send never reached the provider (our own rate limit): hand back
        the trial, change nothing else."""
        if gate.trial:
            self._quietly(lambda cache: cache.delete(self._trial))

    def reset(self) -> None:
        self._quietly(
            lambda cache: cache.delete_many([self._failures, self._open_until, self._trial])
        )

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
        cache.set(self._open_until, until, timeout=math.ceil(self.cool_down) + FAILURE_MEMORY)
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
