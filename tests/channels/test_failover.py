"""Provider failover, circuit breakers and shared send-rate limits.

The primary is anymail's Postmark backend against the local Postmark peer, the
secondary Django's SMTP backend against the aiosmtpd peer: real requests, real
refusals. Breaker and rate-limit state lives in Django's cache (local memory
here, and a real ``redis-server`` on 127.0.0.1 when one is installed). Time is
moved with ``time_machine``; the peers keep using real sockets and monotonic
time-outs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from django.core.cache import caches

from channels.base import ChannelConfigurationError, InvalidRecipient, TransientError
from channels.email import EmailChannel
from channels.failover import CircuitBreaker, FailoverChannel
from channels.ratelimit import Rate, RateLimited, RateLimiter, SlidingLimiter, parse_rate
from notify import trigger
from notify.models import Delivery
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.channel_contract import outgoing
from tests.peers.esp import free_port

START = datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=UTC)  # a quarter into a second


def failover_config(threshold: int = 3, cool_down: float = 60, **options) -> dict:
    return {
        "BACKEND": "channels.failover.FailoverChannel",
        "OPTIONS": {
            "PROVIDERS": [
                {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
                {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "smtp"}},
            ],
            "FAILURE_THRESHOLD": threshold,
            "COOL_DOWN": cool_down,
            **options,
        },
    }


@pytest.fixture(autouse=True)
def _fresh_cache():
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def providers(settings, esp_peer, smtp_peer):
    """MAILERS "postmark" (primary, the Postmark peer) and "smtp" (the aiosmtpd peer)."""
    settings.MAILERS = {
        **settings.MAILERS,
        "postmark": esp_peer.mailer(timeout=1.0),
        "smtp": smtp_peer.mailer(timeout=2.0),
    }
    return esp_peer, smtp_peer


def make_failover(**kwargs) -> FailoverChannel:
    config = failover_config(**kwargs)
    return FailoverChannel("email", **config["OPTIONS"])


# -- through the pipeline -----------------------------------------------------------------


@pytest.fixture
def email_via_failover(settings, providers, make_user, make_rule):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "email": failover_config()},
    }
    alice = make_user("alice")
    make_rule(channels=["email"])

    def send(order: str) -> Delivery:
        event = trigger("order.shipped", {"order_id": order}, recipients=[alice])
        run_until_idle()
        return Delivery.objects.get(notification__event=event)

    return alice, send


def test_primary_down_the_secondary_delivers_and_is_on_the_record(email_via_failover, providers):
    esp, smtp = providers
    esp.down()  # for the whole test
    alice, send = email_via_failover

    delivery = send("A1")

    assert delivery.status == Status.SENT
    assert delivery.attempts == 1
    assert delivery.provider == "smtp"
    [email] = smtp.messages
    assert email.rcpt_tos == (alice.email,)
    assert delivery.provider_message_id == email.message_id
    [attempt] = delivery.attempt_log.all()
    assert (attempt.outcome, attempt.provider) == ("sent", "smtp")


def test_with_both_up_the_primary_sends(email_via_failover, providers):
    esp, smtp = providers
    _alice, send = email_via_failover
    delivery = send("A1")
    assert (delivery.status, delivery.provider) == (Status.SENT, "postmark")
    assert delivery.provider_message_id == esp.messages[0].message_id
    assert smtp.messages == []


def test_a_permanent_refusal_from_the_primary_fails_without_falling_over(
    email_via_failover, providers
):
    esp, smtp = providers
    alice, send = email_via_failover
    esp.reject(alice.email, "invalid")

    delivery = send("A1")

    assert delivery.status == Status.FAILED
    assert delivery.provider == "postmark"
    assert delivery.error_code == "recipients_refused"
    assert smtp.messages == []  # the secondary is not spammed with a bad address
    assert CircuitBreaker("email:postmark").state() == "closed"


def test_when_every_provider_fails_the_delivery_waits_for_the_longest_retry_after(
    email_via_failover, providers
):
    esp, smtp = providers
    _alice, send = email_via_failover
    esp.throttle_next(1, retry_after=900)
    smtp.stop()

    before = time.time()
    delivery = send("A1")

    assert delivery.status == Status.PENDING
    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == "transient"
    assert "postmark: [429]" in attempt.error_message
    assert "smtp: cannot reach the mail server" in attempt.error_message
    assert delivery.next_attempt_at.timestamp() >= before + 900 * 0.8  # Retry-After, jittered


# -- the circuit breaker -------------------------------------------------------------------


def test_the_breaker_opens_after_n_failures_then_half_opens(providers, time_machine):
    esp, smtp = providers
    time_machine.move_to(START, tick=False)
    esp.fail_next(100, 500)
    channel = make_failover(threshold=3, cool_down=60)
    breaker = channel.providers[0].breaker

    with channel:
        # Three transient failures: each message still goes out through SMTP.
        for _ in range(3):
            assert channel.send(outgoing(channel, "bob@example.com")).provider == "smtp"
        assert len(esp.requests) == 3
        assert breaker.state() == "open"

        # Open: the primary is not called at all.
        for _ in range(4):
            assert channel.send(outgoing(channel, "bob@example.com")).provider == "smtp"
        assert len(esp.requests) == 3
        assert len(smtp.messages) == 7

        # Still open just before the cool-down ends.
        time_machine.shift(59)
        channel.send(outgoing(channel, "bob@example.com"))
        assert len(esp.requests) == 3

        # Half-open: one trial. It fails: open again for another cool-down.
        time_machine.shift(2)
        assert breaker.state() == "half-open"
        assert channel.send(outgoing(channel, "bob@example.com")).provider == "smtp"
        assert len(esp.requests) == 4
        assert breaker.state() == "open"
        channel.send(outgoing(channel, "bob@example.com"))
        assert len(esp.requests) == 4

        # The next trial succeeds: closed, the primary sends again.
        esp.reset()
        time_machine.shift(61)
        result = channel.send(outgoing(channel, "bob@example.com"))
        assert (result.provider, result.message_id) == ("postmark", esp.messages[0].message_id)
        assert breaker.state() == "closed"
        assert channel.send(outgoing(channel, "bob@example.com")).provider == "postmark"


def test_a_provider_failing_one_send_in_three_keeps_its_traffic(providers):
    """The breaker judges the failure rate, not a run of failures: at the
    defaults, a primary that answers 503 to every third send stays closed
    (two in a row used to be enough with a threshold of 2)."""
    esp, _smtp = providers
    channel = FailoverChannel(
        "email", PROVIDERS=failover_config()["OPTIONS"]["PROVIDERS"], CACHE="default"
    )
    with channel:
        for _ in range(30):
            esp.fail_next(1, 503)
            channel.send(outgoing(channel, "bob@example.com"))  # 503 → smtp
            channel.send(outgoing(channel, "bob@example.com"))
            channel.send(outgoing(channel, "bob@example.com"))
    assert channel.providers[0].breaker.state() == "closed"
    assert len(esp.requests) == 90
    assert len(esp.messages) == 60


def test_breaker_state_is_shared_and_only_one_worker_gets_the_trial(time_machine):
    time_machine.move_to(START, tick=False)
    worker_a = CircuitBreaker("email:postmark", minimum_calls=2, cool_down=30)
    worker_b = CircuitBreaker("email:postmark", minimum_calls=2, cool_down=30)
    worker_a.record_failure(worker_a.allow())
    worker_b.record_failure(worker_b.allow())  # the second consecutive failure, elsewhere
    gate = worker_a.allow()
    assert not gate.allowed
    assert gate.retry_after == pytest.approx(30)

    time_machine.shift(30)
    trial = worker_b.allow()
    assert trial.allowed and trial.trial
    assert not worker_a.allow().allowed  # the trial is taken
    worker_b.record_success(trial)
    assert worker_a.allow().allowed
    assert worker_a.state() == "closed"


def test_every_provider_open_is_a_transient_error_with_the_cool_down(providers, time_machine):
    esp, smtp = providers
    time_machine.move_to(START, tick=False)
    channel = make_failover(threshold=1, cool_down=120)
    esp.fail_next(1, 500)
    smtp.stop()
    with channel:
        with pytest.raises(TransientError):
            channel.send(outgoing(channel, "bob@example.com"))
        with pytest.raises(TransientError) as caught:
            channel.send(outgoing(channel, "bob@example.com"))
    assert str(caught.value) == (
        "[circuit_open] no provider could send: postmark: circuit open; smtp: circuit open"
    )
    assert 110 < caught.value.retry_after <= 120
    assert len(esp.requests) == 1


def test_our_own_rate_limit_does_not_count_against_the_primary(providers):
    esp, _smtp = providers
    config = failover_config(threshold=1)
    config["OPTIONS"]["PROVIDERS"][0]["OPTIONS"]["RATE_LIMIT"] = "2/m"
    channel = FailoverChannel("email", **config["OPTIONS"])
    with channel:
        sent_by = [channel.send(outgoing(channel, "bob@example.com")).provider for _ in range(4)]
    assert sent_by == ["postmark", "postmark", "smtp", "smtp"]
    assert len(esp.requests) == 2
    assert channel.providers[0].breaker.state() == "closed"


def test_a_provider_name_can_be_given(providers):
    esp, _smtp = providers
    config = failover_config()
    config["OPTIONS"]["PROVIDERS"][0]["NAME"] = "postmark-eu"
    channel = FailoverChannel("email", **config["OPTIONS"])
    with channel:
        assert channel.send(outgoing(channel, "bob@example.com")).provider == "postmark-eu"
        esp.reject("bad@example.com")
        with pytest.raises(InvalidRecipient) as caught:
            channel.send(outgoing(channel, "bad@example.com"))
    assert caught.value.provider == "postmark-eu"
    assert channel.providers[0].channel.alias == "email:postmark-eu"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"PROVIDERS": []}, "PROVIDERS"),
        ({"PROVIDERS": [{"OPTIONS": {}}]}, "PROVIDERS[0]"),
        ({"PROVIDERS": [{"BACKEND": "channels.nope.Channel"}]}, "cannot import"),
        ({"PROVIDERS": [{"BACKEND": "channels.failover.FailoverChannel"}]}, "cannot nest"),
        (
            {"PROVIDERS": [{"BACKEND": "channels.email.EmailChannel"}], "COOL_DOWN": "x"},
            "COOL_DOWN",
        ),
        (
            {"PROVIDERS": [{"BACKEND": "channels.email.EmailChannel"}], "FAILURE_THRESHOLD": 0},
            "FAILURE_THRESHOLD",
        ),
        ({"PROVIDERS": [{"BACKEND": "channels.email.EmailChannel"}], "CACHE": "nope"}, "'nope'"),
        (
            {"PROVIDERS": [{"BACKEND": "channels.email.EmailChannel"}], "RATE_LIMIT": "fast"},
            "RATE_LIMIT 'fast'",
        ),
        (
            {
                "PROVIDERS": [
                    {"BACKEND": "channels.email.EmailChannel"},
                    {"BACKEND": "channels.inapp.InAppChannel"},
                ]
            },
            "unlike",
        ),
    ],
)
def test_bad_configuration_says_what_to_fix(options, message):
    with pytest.raises(ChannelConfigurationError, match=message.replace("[", r"\[")):
        FailoverChannel("email", **options)


# -- shared send-rate limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/s", Rate(10, 1)),
        ("600/m", Rate(600, 60)),
        ("5/2s", Rate(5, 2)),
        ("100 / hour", Rate(100, 3600)),
        ("10000/d", Rate(10000, 86400)),
        ("3/0.5 seconds", Rate(3, 0.5)),
    ],
)
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "10", "ten/s", "10/fortnight", "0/s", "10/0s"])
def test_bad_rates_are_configuration_errors(text):
    with pytest.raises(ChannelConfigurationError):
        parse_rate(text)


def test_the_limit_resets_with_the_window(time_machine):
    time_machine.move_to(START, tick=False)
    limiter = RateLimiter("unit", "3/s")
    for _ in range(3):
        limiter.acquire()
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(provider="smtp")
    assert caught.value.retry_after == pytest.approx(0.75)
    assert (caught.value.code, caught.value.provider) == ("rate_limited", "smtp")
    assert caught.value.retryable
    time_machine.shift(0.75)
    limiter.acquire()


def test_the_sliding_limit_holds_over_any_span(time_machine):
    time_machine.move_to(START, tick=False)
    limiter = SlidingLimiter("unit-sliding", "3/2s")
    time_machine.shift(1.5)  # late in a 2 s window: a fixed window starts afresh at 2.0
    for _ in range(3):
        limiter.acquire()
    time_machine.shift(0.6)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(provider="dingtalk")
    assert caught.value.retry_after == pytest.approx(1.4)
    assert (caught.value.code, caught.value.provider) == ("rate_limited", "dingtalk")
    time_machine.shift(1.4)
    for _ in range(3):
        limiter.acquire()
    with pytest.raises(RateLimited):
        limiter.acquire()


def run_in_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_two_workers_share_one_limit(settings, smtp_peer, time_machine):
    """Two threads, each with its own channel instance, as two workers would: the
    cache counts for both, so exactly the limit gets through in one window."""
    time_machine.move_to(START, tick=False)
    settings.MAILERS = {**settings.MAILERS, "smtp": smtp_peer.mailer()}
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        channel = EmailChannel("email", MAILER="smtp", RATE_LIMIT="5/s")
        with channel:
            for _ in range(6):
                try:
                    channel.send(outgoing(channel, f"w{number}@example.com"))
                    outcome = "sent"
                except RateLimited:
                    outcome = "limited"
                with lock:
                    outcomes.append(outcome)

    run_in_threads(2, worker)
    assert sorted(outcomes) == ["limited"] * 7 + ["sent"] * 5
    assert len(smtp_peer.messages) == 5

    time_machine.shift(1)  # the next window
    run_in_threads(2, worker)
    assert len(smtp_peer.messages) == 10


def test_rate_over_real_time_stays_within_the_windows(settings, smtp_peer):
    """Real clock, two threads retrying after ``retry_after``: no window lets more
    than the limit through."""
    settings.MAILERS = {**settings.MAILERS, "smtp": smtp_peer.mailer()}
    sent_at: list[float] = []
    lock = threading.Lock()
    deadline = time.time() + 1.6

    def worker(number: int) -> None:
        channel = EmailChannel("email", MAILER="smtp", RATE_LIMIT="4/0.5s")
        with channel:
            while time.time() < deadline:
                try:
                    before = time.time()
                    channel.send(outgoing(channel, f"w{number}@example.com"))
                    with lock:
                        sent_at.append(before)
                except RateLimited as limited:
                    time.sleep(min(limited.retry_after, 0.5))

    started = time.time()
    run_in_threads(2, worker)
    windows = int(deadline // 0.5) - int(started // 0.5) + 1
    assert len(smtp_peer.messages) == len(sent_at)
    assert len(sent_at) <= 4 * windows
    assert len(sent_at) >= 4 * (windows - 2)  # demand never stopped


# -- the same over a real Redis ----------------------------------------------------------------


@pytest.fixture
def redis_cache(settings, tmp_path):
    """A throwaway redis-server on 127.0.0.1 as CACHES["default"]."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    original = settings.CACHES
    process = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
            }
        }
        yield caches["default"]
    finally:
        settings.CACHES = original  # before the server goes: teardowns clear the cache
        process.terminate()
        process.wait(timeout=10)


def test_limits_and_breakers_over_redis(redis_cache, settings, providers):
    esp, smtp = providers
    limiter = RateLimiter("redis-bucket", "5/m")
    granted = []

    def take(_number: int) -> None:
        for _ in range(5):
            granted.append(limiter.wait_time() == 0.0)

    run_in_threads(4, take)
    assert granted.count(True) == 5
    assert type(redis_cache).__name__ == "RedisCache"

    # Two failover instances (two processes, in effect) share the breaker.
    esp.fail_next(10, 500)
    first, second = make_failover(threshold=2), make_failover(threshold=2)
    with first, second:
        first.send(outgoing(first, "bob@example.com"))
        second.send(outgoing(second, "bob@example.com"))
        assert second.providers[0].breaker.state() == "open"
        assert redis_cache.get("notify:circuit:email:postmark:open_until") is not None
        first.send(outgoing(first, "bob@example.com"))
    assert len(esp.requests) == 2
    assert len(smtp.messages) == 3


def test_a_bad_failover_fails_the_start_up_check(settings, providers):
    from notify.checks import check_channels

    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": failover_config(CACHE="missing"),
        },
    }
    [error] = [e for e in check_channels() if e.id == "notify.E006"]
    assert "CACHES has no usable 'missing' cache" in error.msg
