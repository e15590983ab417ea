"""The circuit breaker judges a failure rate, through the real signed-webhook
channel against the local receiver, at the default options, on a controlled
clock (two sends a second):

* a receiver that fails one request in three keeps all its traffic (a run of
  five failures used to open the breaker every few hundred requests);
* one that goes down after a healthy spell opens the breaker after
  ``MINIMUM_CALLS`` failures in a row, without waiting for its successes to
  slide out of the window;
* one that fails three requests in four, never 20 in a row, opens on its rate;
* the former option ``FAILURE_THRESHOLD`` is read as ``MINIMUM_CALLS``; a bad
  ``FAILURE_RATE`` is a configuration error naming it.
"""

from __future__ import annotations

import random

import pytest

from channels import breaker
from channels.base import ChannelConfigurationError, OutgoingMessage, TransientError
from channels.breaker import DEFAULT_MINIMUM_CALLS, CircuitBreaker, CircuitOpen
from channels.webhook import SignedWebhookChannel

SECRET = "whsec-breaker-0001"
TICK = 0.5  # seconds between two sends on the controlled clock


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    return now


@pytest.fixture
def receiver(webhook_peer):
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    channel = SignedWebhookChannel("webhook", SECRET=SECRET, INTERNAL_HOSTS=["127.0.0.1"])
    with channel:
        yield channel, url


def send(channel, url, n: int) -> str:
    """One send: "sent", "failed" (the receiver's 503) or "open" (no request)."""
    try:
        channel.send(OutgoingMessage(n, "webhook", url))
    except CircuitOpen:
        return "open"
    except TransientError:
        return "failed"
    return "sent"


def test_a_receiver_failing_one_request_in_three_keeps_its_traffic(webhook_peer, receiver, clock):
    channel, url = receiver
    rng = random.Random(5)  # its stream has 7 failures in a row
    outcomes = []
    for n in range(1, 241):  # two minutes: two whole windows
        if rng.random() < 1 / 3:
            webhook_peer.fail_next(1, 503)
        outcomes.append(send(channel, url, n))
        clock[0] += TICK
    assert "open" not in outcomes
    assert len(webhook_peer.requests) == 240
    assert 60 < outcomes.count("failed") < 100
    assert channel.breaker_for(url).state() == "closed"


def test_a_receiver_that_goes_down_after_a_healthy_spell_opens_at_once(
    webhook_peer, receiver, clock
):
    channel, url = receiver
    for n in range(1, 121):  # a minute of successes fills the window
        assert send(channel, url, n) == "sent"
        clock[0] += TICK
    webhook_peer.fail_next(100_000, 503)
    outcomes = []
    for n in range(121, 161):
        outcomes.append(send(channel, url, n))
        clock[0] += TICK
    assert outcomes[:DEFAULT_MINIMUM_CALLS] == ["failed"] * DEFAULT_MINIMUM_CALLS
    assert set(outcomes[DEFAULT_MINIMUM_CALLS:]) == {"open"}
    assert len(webhook_peer.requests) == 120 + DEFAULT_MINIMUM_CALLS


def test_a_receiver_failing_three_requests_in_four_opens_on_its_rate(webhook_peer, receiver, clock):
    channel, url = receiver
    outcomes = []
    for n in range(1, 101):
        if n % 4:
            webhook_peer.fail_next(1, 503)
        outcomes.append(send(channel, url, n))
        clock[0] += TICK
    first_open = outcomes.index("open")
    assert DEFAULT_MINIMUM_CALLS <= first_open <= DEFAULT_MINIMUM_CALLS + 4
    assert set(outcomes[first_open:]) == {"open"}
    calls = outcomes[:first_open]
    assert calls.count("failed") >= 0.7 * len(calls)


def test_failures_slide_out_of_the_window(clock):
    """19 failures, then a quiet minute: the window starts empty again."""
    cb = CircuitBreaker("slide", minimum_calls=20, failure_rate=0.7, window=60)
    for _ in range(19):
        cb.record_failure(cb.allow())
        clock[0] += 1
    cb.record_success(cb.allow())  # ends the run
    assert cb.window_counts() == (20, 19)
    clock[0] += 61
    assert cb.window_counts() == (0, 0)
    cb.record_failure(cb.allow())
    assert cb.state() == "closed"


def test_options():
    where = "channel 'webhook'"
    assert CircuitBreaker.from_options("a", {}, where).minimum_calls == DEFAULT_MINIMUM_CALLS
    assert CircuitBreaker.from_options("a", {"FAILURE_THRESHOLD": 3}, where).minimum_calls == 3
    assert CircuitBreaker.from_options("a", {"MINIMUM_CALLS": 7}, where).minimum_calls == 7
    for bad in ({"FAILURE_RATE": 1.5}, {"FAILURE_RATE": "x"}, {"WINDOW": 0}):
        with pytest.raises(ChannelConfigurationError, match=next(iter(bad))):
            CircuitBreaker.from_options("a", bad, where)
