"""Rate limits on the events API: per API key and per client address.

Settings (in ``NOTIFY``; each a rate written as channels write theirs:
``"600/m"``, ``"10/s"``, ``"5000/h"``; ``None`` turns that limit off):

``API_RATE_LIMIT_PER_KEY`` (default ``"600/m"``)
    Requests per API key, over all events endpoints.
``API_RATE_LIMIT_PER_ADDRESS`` (default ``"1200/m"``)
    Requests per client address, counted *before* authentication, so requests
    without a key or with a wrong one are limited too. The address is the
    socket's peer (``REMOTE_ADDR``); behind a proxy, list it in
    ``NOTIFY["TRUSTED_PROXIES"]`` so the server puts the client's address there.

Each limit is a token bucket of ``limit`` tokens refilled at ``limit / period``
per second, kept in Django's default cache: a client may burst up to
``limit`` requests, then goes at the rate. A request over the limit is a 429
with ``Retry-After`` (seconds until one token is back) and a JSON error that
names the limit and its setting.

A bucket is read and written under a short lock taken with ``cache.add``
(atomic on Redis, Memcached and the database cache; with LocMemCache, whose buckets
live in the process, the per-process lock below is enough and no cache lock is taken),
so concurrent requests never spend the same token twice. Concurrent requests of
one bucket queue for the lock (a few cache round trips each); one that cannot
take it within ``LOCK_WAIT`` is refused (429, ``Retry-After: 1``), so a flood
cannot slip through by contention. If the cache cannot be reached the
request goes through and a warning is logged: the API stays up.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.http import HttpRequest, HttpResponse

from channels.ratelimit import Rate, parse_rate
from notify import conf
from notify.api.errors import ApiError, View

log = logging.getLogger("notify.api.ratelimit")

PREFIX = "notify:api-bucket:"
LOCK_WAIT = 5.0  # seconds: a burst of concurrent requests queues, it is not refused
# Threads of one process queue on a local lock first (cheap, fair enough), so
# only one of them at a time polls the cache lock that serialises processes:
# 50 threads spinning on ``cache.add`` starved each other past LOCK_WAIT on a
# loaded host and legitimate requests got 429s.
_LOCAL_LOCKS = [threading.Lock() for _ in range(64)]
LOCK_TIMEOUT = 2  # seconds a crashed holder can keep a bucket locked


def setting(name: str) -> str | None:
    """``NOTIFY[name]``, or its default (``notify.conf``)."""
    return conf.get(name)


@dataclass(frozen=True, slots=True)
class Limit:
    setting: str
    rate: Rate

    def describe(self) -> str:
        return f"NOTIFY['{self.setting}'] = {self.rate.limit} requests per {self.rate.period:g} s"


def limit_for(name: str) -> Limit | None:
    text = setting(name)
    return Limit(name, parse_rate(text)) if text else None


def take(bucket: str, rate: Rate, *, now: float | None = None) -> float | None:
    """Take one token from ``bucket``; None when allowed, else seconds to wait."""
    key = PREFIX + bucket
    lock = key + ":lock"
    deadline = time.monotonic() + LOCK_WAIT
    local = _LOCAL_LOCKS[zlib.crc32(key.encode()) % len(_LOCAL_LOCKS)]
    if not local.acquire(timeout=LOCK_WAIT):
        return 1.0
    try:
        if isinstance(caches[DEFAULT_CACHE_ALIAS], LocMemCache):
            # This process's own memory: the local lock already orders every
            # taker of this bucket, the cache lock would add four round trips
            # of pickling for nothing.
            return _refill_and_take(key, rate, now)
        return _take_locked(key, lock, rate, deadline, now)
    finally:
        local.release()


def _take_locked(
    key: str, lock: str, rate: Rate, deadline: float, now: float | None
) -> float | None:
    try:
        while not cache.add(lock, 1, timeout=LOCK_TIMEOUT):
            if time.monotonic() > deadline:
                return 1.0
            time.sleep(0.002)
        try:
            return _refill_and_take(key, rate, now)
        finally:
            cache.delete(lock)
    except Exception:  # the cache is down: better no limit than no API
        log.warning("rate limit not applied: the cache cannot be reached", exc_info=True)
        return None


def _refill_and_take(key: str, rate: Rate, now: float | None) -> float | None:
    """The bucket's arithmetic; the caller holds whatever lock orders its takers."""
    now = time.time() if now is None else now
    refill = rate.limit / rate.period
    tokens, updated = cache.get(key) or (float(rate.limit), now)
    tokens = min(float(rate.limit), tokens + max(0.0, now - updated) * refill)
    if tokens >= 1.0:
        cache.set(key, (tokens - 1.0, now), timeout=math.ceil(rate.period) + 60)
        return None
    cache.set(key, (tokens, now), timeout=math.ceil(rate.period) + 60)
    return (1.0 - tokens) / refill


def check(name: str, who: str) -> None:
    """Raise the 429 ``ApiError`` when ``who`` is over the limit ``name``."""
    limit = limit_for(name)
    if limit is None:
        return
    wait = take(f"{name}:{who}", limit.rate)
    if wait is None:
        return
    seconds = max(1, math.ceil(wait))
    raise ApiError(
        429,
        "rate_limited",
        f"Too many requests: the limit is {limit.describe()}. Retry after {seconds} s.",
        headers={"Retry-After": str(seconds)},
    )


def client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def limited_per_address(view: View) -> View:
    """Outermost (inside ``api_view``): counts every request, before its key is checked."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        check("API_RATE_LIMIT_PER_ADDRESS", client_address(request))
        return view(request, *args, **kwargs)

    return wrapper


def limited_per_key(view: View) -> View:
    """Inside ``api_key_required``: counts the requests of ``request.api_key``."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        check("API_RATE_LIMIT_PER_KEY", str(request.api_key.pk))
        return view(request, *args, **kwargs)

    return wrapper
