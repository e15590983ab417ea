"""``notify.delivery.retry.RetryPolicy``: exponential backoff, jitter, Retry-After, exhaustion."""

from __future__ import annotations

import random

import pytest

from notify import conf
from notify.delivery.retry import RetryPolicy

HOUR = 3600.0


def test_bounds_grow_exponentially_then_cap():
    policy = RetryPolicy(base_delay=100, factor=3, max_delay=1000, jitter=0.1)
    assert policy.bounds(1) == pytest.approx((90, 110))
    assert policy.bounds(2) == pytest.approx((270, 330))
    assert policy.bounds(3) == pytest.approx((810, 990))
    assert policy.bounds(4) == pytest.approx((900, 1100))  # capped at max_delay
    assert policy.bounds(50) == pytest.approx((900, 1100))


def test_attempt_zero_or_less_is_treated_as_the_first():
    policy = RetryPolicy()
    assert policy.bounds(0) == policy.bounds(1)


def test_delay_stays_within_the_bounds_and_is_spread():
    policy = RetryPolicy(base_delay=60, jitter=0.25)
    rng = random.Random(1234)
    for attempt in range(1, 11):
        low, high = policy.bounds(attempt)
        samples = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(low <= s <= high for s in samples)
        # Jitter: retries after the same failure do not stampede at one instant.
        assert max(samples) - min(samples) > 0.5 * (high - low)


def test_no_jitter_is_exact():
    policy = RetryPolicy(base_delay=10, factor=2, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [10, 20, 40]


def test_retry_after_is_a_floor():
    policy = RetryPolicy(base_delay=60, jitter=0.2)
    rng = random.Random(7)
    assert policy.delay(1, retry_after=3600, rng=rng) == 3600
    # A Retry-After shorter than the backoff does not shorten it.
    low, high = policy.bounds(1)
    assert low <= policy.delay(1, retry_after=1, rng=rng) <= high
    assert low <= policy.delay(1, retry_after=None, rng=rng) <= high


def test_exhausted_after_max_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in range(5)] == [False, False, False, True, True]


def test_from_settings_reads_notify(settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "MAX_ATTEMPTS": 4,
        "RETRY_BASE_DELAY": 5.0,
        "RETRY_FACTOR": 3.0,
        "RETRY_MAX_DELAY": 100.0,
        "RETRY_JITTER": 0.0,
    }
    assert RetryPolicy.from_settings() == RetryPolicy(
        max_attempts=4, base_delay=5.0, factor=3.0, max_delay=100.0, jitter=0.0
    )


def nominal(policy: RetryPolicy, attempt: int) -> float:
    low, high = policy.bounds(attempt)
    return (low + high) / 2


def test_default_policy_spans_about_a_day():
    """Ten attempts, nine waits between them: long enough to ride out an
    outage of several hours, short enough that a dead delivery surfaces the
    same or the next day."""
    policy = RetryPolicy.from_settings()
    assert policy.max_attempts == conf.DEFAULTS["MAX_ATTEMPTS"] == 10
    waits = [nominal(policy, attempt) for attempt in range(1, policy.max_attempts)]
    assert 12 * HOUR <= sum(waits) <= 36 * HOUR
    # Even with the worst jitter the span stays on the order of a day.
    shortest = sum(policy.bounds(a)[0] for a in range(1, policy.max_attempts))
    longest = sum(policy.bounds(a)[1] for a in range(1, policy.max_attempts))
    assert shortest >= 8 * HOUR
    assert longest <= 48 * HOUR
    # The first retry is quick, and no single wait is longer than the cap.
    assert policy.bounds(1)[1] <= 5 * 60
    assert max(policy.bounds(a)[1] for a in range(1, 20)) <= policy.max_delay * 1.5


def test_class_defaults_match_the_documented_settings():
    assert RetryPolicy() == RetryPolicy(
        max_attempts=conf.DEFAULTS["MAX_ATTEMPTS"],
        base_delay=conf.DEFAULTS["RETRY_BASE_DELAY"],
        factor=conf.DEFAULTS["RETRY_FACTOR"],
        max_delay=conf.DEFAULTS["RETRY_MAX_DELAY"],
        jitter=conf.DEFAULTS["RETRY_JITTER"],
    )
