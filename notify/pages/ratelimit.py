"""A small per-key rate limit on Django's cache (fixed windows).

``hit("test-send:42", limit=5, window=3600)`` counts one use and returns None
while the key is under its limit, or the seconds until the window ends once it
is over. Counting is ``cache.add`` + ``cache.incr``, atomic on every shared
backend (Redis, Memcached, the database cache) and per process on LocMemCache.
A fixed window lets a burst straddle a boundary (up to twice the limit in a
short time); that is acceptable for what this guards: test sends and codes.
"""

from __future__ import annotations

import math
import time

from django.core.cache import cache

PREFIX = "notify:ratelimit:"


def hit(key: str, *, limit: int, window: int, now: float | None = None) -> int | None:
    """Count one use of ``key``; None if allowed, else seconds to wait."""
    now = time.time() if now is None else now
    bucket = int(now // window)
    cache_key = f"{PREFIX}{key}:{bucket}"
    # The entry outlives its window a little so a slow clock cannot reset it early.
    cache.add(cache_key, 0, timeout=window + 60)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # evicted between add and incr: count this use as the first
        cache.set(cache_key, 1, timeout=window + 60)
        count = 1
    if count <= limit:
        return None
    return max(1, math.ceil((bucket + 1) * window - now))


def remaining(key: str, *, limit: int, window: int, now: float | None = None) -> int:
    """How many uses are left in the current window (without counting one)."""
    now = time.time() if now is None else now
    count = cache.get(f"{PREFIX}{key}:{int(now // window)}", 0)
    return max(0, limit - count)


def wait_text(seconds: int) -> str:
    """``75`` -> ``"2 minutes"``: how long, as people say it."""
    if seconds < 60:
        return "1 second" if seconds <= 1 else f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
