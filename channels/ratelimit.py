"""Send-rate limits shared by every worker, over Django's cache framework.

A channel's ``RATE_LIMIT`` option (``"10/s"``, ``"600/m"``, ``"5/2s"``,
``"10000/d"``) caps how many sends all workers of all processes together may
start per period. A channel calls :func:`throttle` at the top of ``send``;
over the limit it raises :class:`RateLimited`, a :class:`TransientError` with
``retry_after`` set to the end of the current window. It never sleeps: the
worker moves on, the delivery goes back to the outbox with that delay, and a
failover channel tries its next provider instead.

Options read from the channel: ``RATE_LIMIT`` (no limit when unset),
``RATE_LIMIT_KEY`` (the bucket's name, default the channel alias: give two
channels the same key to share one provider account's limit) and ``CACHE``
(the ``CACHES`` alias, default ``"default"``).

The algorithm is fixed-window counting. The counter of the current window,
``notify:rate:<key>:<window number>``, is created with ``cache.add`` and
increased with ``cache.incr``: both are atomic on Redis (``SET NX``,
``INCR``) and on ``LocMemCache`` (one lock), so concurrent workers never lose
a count and no lock is held while sending. A counter expires by itself.

Precision: at most ``limit`` sends start within one window, so the long-run
rate is exact; but a burst can straddle a window boundary, so up to
``2 * limit`` sends can start within one period measured from an arbitrary
moment. Windows follow each host's wall clock (``time.time``): hosts should
run NTP, as a host ``d`` seconds off shifts its windows by ``d``. A token
bucket would smooth the boundary burst, but refilling it is a
read-modify-write that Django's cache API cannot make atomic without a lock or
a Redis script; :class:`SlidingLimiter` holds the limit over any span with
one cache key per allowed send, for the small limits where a boundary burst
is punished (chat robots). If the cache cannot be reached the limiter lets the send
through and logs a warning: a missing rate limit is better than no email.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.base import BaseCache

from .base import ChannelConfigurationError, Deferred

if TYPE_CHECKING:
    from .base import Channel

log = logging.getLogger("channels.ratelimit")

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$", re.IGNORECASE)


class RateLimited(Deferred):
    """Our own send-rate limit, not the provider's answer: try again after
    ``retry_after`` (a circuit breaker does not count it against the provider,
    and the outbox does not count it as an attempt)."""


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int  # sends
    period: float  # per this many seconds

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s"


@lru_cache(maxsize=128)
def parse_rate(text: str) -> Rate:
    """``"10/s"`` → ``Rate(10, 1.0)``; ``"5/2s"`` → ``Rate(5, 2.0)``."""
    match = _RATE.match(str(text))
    unit = match and match.group(3).lower()
    if unit and unit not in _UNITS and unit.endswith("s"):
        unit = unit[:-1]  # "seconds", "mins"
    if not match or unit not in _UNITS:
        raise ChannelConfigurationError(
            f"RATE_LIMIT {text!r} is not a rate: write sends per period, e.g. "
            "'10/s', '600/m', '5/2s', '10000/d'."
        )
    limit = int(match.group(1))
    period = float(match.group(2) or 1) * _UNITS[unit]
    if limit < 1 or period <= 0:
        raise ChannelConfigurationError(f"RATE_LIMIT {text!r} must allow at least 1 send.")
    return Rate(limit, period)


class RateLimiter:
    """A fixed-window counter named ``key`` in the cache ``cache_alias``."""

    def __init__(self, key: str, rate: Rate | str, *, cache_alias: str = "default"):
        self.key = key
        self.rate = rate if isinstance(rate, Rate) else parse_rate(rate)
        self.cache_alias = cache_alias

    def wait_time(self) -> float:
        """Take one send from the current window: ``0.0`` when granted, else the
        seconds until the next window opens."""
        rate = self.rate
        now = time.time()
        window = math.floor(now / rate.period)
        key = f"notify:rate:{self.key}:{window}"
        cache = cache_named(self.cache_alias)
        try:
            # add() is a no-op when the counter exists; incr() is atomic.
            cache.add(key, 0, timeout=math.ceil(rate.period * 2) + 1)
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=math.ceil(rate.period * 2) + 1)
                count = 1
        except Exception as exc:  # the cache is down: send rather than stall
            log.warning("rate limit %s not applied, the cache failed: %s", self.key, exc)
            return 0.0
        if count <= rate.limit:
            return 0.0
        return max((window + 1) * rate.period - now, 0.001)

    def acquire(self, provider: str = "") -> None:
        """Take one send or raise :class:`RateLimited`."""
        wait = self.wait_time()
        if wait:
            raise RateLimited(
                f"send rate limit {self.rate} of '{self.key}' reached; next window in {wait:.3f}s",
                code="rate_limited",
                provider=provider,
                retry_after=wait,
            )


class SlidingLimiter:
    """At most ``rate.limit`` sends in *any* span of ``rate.period`` seconds,
    for providers that punish the burst a fixed window lets through at its
    boundary (a DingTalk robot sent 21 messages within a minute is throttled
    for 10 minutes).

    Each send holds one of ``limit`` slots: a cache key taken with
    ``cache.add`` (atomic on Redis and ``LocMemCache``) that expires
    ``period`` seconds later (rounded up to whole seconds, never sooner). Two
    sends less than ``period`` apart never share a slot, so no span holds more
    than ``limit``. One ``get_many`` and usually one ``add`` per send: meant
    for small limits (a robot's 20 a minute), not ``10000/d``."""

    def __init__(self, key: str, rate: Rate | str, *, cache_alias: str = "default"):
        self.key = key
        self.rate = rate if isinstance(rate, Rate) else parse_rate(rate)
        self.cache_alias = cache_alias
        self.hold = math.ceil(self.rate.period)
        self.slots = [f"notify:slot:{key}:{n}" for n in range(self.rate.limit)]

    def wait_time(self) -> float:
        """Take a free slot: ``0.0`` when granted, else the seconds until the
        oldest slot frees."""
        now = time.time()
        cache = cache_named(self.cache_alias)
        try:
            taken = cache.get_many(self.slots)
            for slot in self.slots:
                if slot not in taken and cache.add(slot, now, timeout=self.hold):
                    return 0.0
            taken = cache.get_many(self.slots)  # the others won every free slot
        except Exception as exc:  # the cache is down: send rather than stall
            log.warning("rate limit %s not applied, the cache failed: %s", self.key, exc)
            return 0.0
        oldest = min(taken.values(), default=now)
        return max(oldest + self.hold - now, 0.001)

    def acquire(self, provider: str = "") -> None:
        """Take one send or raise :class:`RateLimited`."""
        wait = self.wait_time()
        if wait:
            raise RateLimited(
                f"send rate limit {self.rate} of '{self.key}' reached; a slot frees in {wait:.3f}s",
                code="rate_limited",
                provider=provider,
                retry_after=wait,
            )


def cache_named(alias: str) -> BaseCache:
    """``caches[alias]``, or a configuration error that says what to set."""
    try:
        return caches[alias]
    except InvalidCacheBackendError as exc:
        raise ChannelConfigurationError(
            f"CACHES has no usable '{alias}' cache (the CACHE option of a rate limit or "
            f"circuit breaker): {exc}"
        ) from exc


# The options of a channel that calls ``throttle`` (see Channel.accepted_options).
RATE_LIMIT_OPTIONS = frozenset({"RATE_LIMIT", "RATE_LIMIT_KEY", "CACHE"})


def limiter_for(channel: Channel) -> RateLimiter | None:
    """The limiter a channel's options describe, or ``None`` without ``RATE_LIMIT``."""
    options = channel.options
    rate = options.get("RATE_LIMIT")
    if not rate:
        return None
    return RateLimiter(
        str(options.get("RATE_LIMIT_KEY") or channel.alias),
        parse_rate(rate),
        cache_alias=options.get("CACHE", "default"),
    )


def throttle(channel: Channel) -> None:
    """Call at the top of ``Channel.send``: raises :class:`RateLimited` when the
    channel's ``RATE_LIMIT`` is used up; does nothing without one."""
    limiter = limiter_for(channel)
    if limiter is not None:
        limiter.acquire(provider=channel.provider_name)


class Pacer:
    """At most one send per ``interval`` seconds to one destination (a Slack
    channel), shared by every worker through the cache, and a pause when the
    provider answers 429 with ``Retry-After``.

    Unlike :class:`RateLimiter`'s windows, the spacing holds between any two
    sends: a send takes the destination's slot with ``cache.add`` (atomic),
    which expires ``interval`` seconds later (rounded up to whole seconds,
    which is what Redis keeps; never faster than asked). Never sleeps: a refused send
    raises :class:`RateLimited` with the wait, and the outbox brings the
    delivery back then without counting an attempt."""

    def __init__(self, name: str, interval: float, *, cache_alias: str = "default"):
        self.name = name
        self.interval = math.ceil(interval) if interval > 0 else 0
        self.cache_alias = cache_alias

    def acquire(self, destination: str, provider: str = "") -> None:
        """Take ``destination``'s slot or raise :class:`RateLimited`."""
        slot = f"notify:pace:{self.name}:{destination}"
        paused = f"{slot}:paused"
        now = time.time()
        cache = cache_named(self.cache_alias)
        try:
            until = cache.get(paused)
            if until is not None and now < until:
                wait = until - now
            elif self.interval <= 0 or cache.add(slot, now, timeout=self.interval):
                return
            else:
                taken = cache.get(slot)
                wait = self.interval - (now - taken) if taken is not None else 0.05
        except Exception as exc:  # the cache is down: send rather than stall
            log.warning("pacing %s not applied, the cache failed: %s", self.name, exc)
            return
        raise RateLimited(
            f"pacing {destination} ({self.name}): one send per {self.interval:g}s; "
            f"next in {max(wait, 0.001):.3f}s",
            code="paced",
            provider=provider,
            retry_after=max(wait, 0.001),
        )

    def pause(self, destination: str, seconds: float | None) -> None:
        """The provider said "retry after ``seconds``" for ``destination``:
        no worker sends there before then."""
        seconds = max(self.interval, 1.0) if seconds is None else max(seconds, self.interval)
        if seconds <= 0:
            return
        key = f"notify:pace:{self.name}:{destination}:paused"
        try:
            cache_named(self.cache_alias).set(
                key, time.time() + seconds, timeout=math.ceil(seconds)
            )
        except Exception as exc:
            log.warning("pacing %s not paused, the cache failed: %s", self.name, exc)
