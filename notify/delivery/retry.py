"""When to try a failed delivery again: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from notify import conf


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    base_delay: float = 120.0
    factor: float = 2.0
    max_delay: float = 6 * 3600.0
    jitter: float = 0.2  # +/- this share of the delay
    # Provider 429s in a row that do not use an attempt (NOTIFY["MAX_FREE_RATE_LIMITS"]).
    max_free_rate_limits: int = 5

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_attempts=conf.get("MAX_ATTEMPTS"),
            base_delay=conf.get("RETRY_BASE_DELAY"),
            factor=conf.get("RETRY_FACTOR"),
            max_delay=conf.get("RETRY_MAX_DELAY"),
            jitter=conf.get("RETRY_JITTER"),
            max_free_rate_limits=conf.get("MAX_FREE_RATE_LIMITS"),
        )

    def bounds(self, attempt: int) -> tuple[float, float]:
        """The (lowest, highest) delay after failed attempt number ``attempt`` (1-based)."""
        nominal = min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))
        return nominal * (1 - self.jitter), nominal * (1 + self.jitter)

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt ``attempt``; never less than the
        provider's ``Retry-After``. Jitter spreads retries so they do not stampede."""
        low, high = self.bounds(attempt)
        delay = (rng or random).uniform(low, high)
        if retry_after is not None:
            # Honour the provider, within reason: a bogus Retry-After of a
            # month must not park the delivery beyond the longest backoff.
            delay = max(delay, min(retry_after, self.max_delay))
        return delay

    def free_delay(self, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait before trying a send that was not an attempt (paced,
        rate limited, circuit open): the provider's or breaker's wait (1 s if
        unsaid), plus up to a tenth more so that waiting sends do not return
        all at once."""
        wait = min(1.0 if retry_after is None else max(retry_after, 0.0), self.max_delay)
        return wait + (rng or random).uniform(0.0, 0.1 * wait + 0.05)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
