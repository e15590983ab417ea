"""Leases: a batch's claim kept by its heartbeat while it runs, bounded in time;
the send gate; the claim checks (notify.E030, E031, W030) at the defaults."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

import notify
from notify import conf
from notify.delivery.gate import SendGate
from notify.delivery.send import deliver
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.checks import check_claims, send_timeout
from notify.outbox.lease import Lease
from notify.outbox.rows import claim_due_deliveries, claim_events
from notify.registry import build_channel
from rules.models import Rule
from tests.peers.counting_provider import CountingProvider
from tests.peers.http import running
from tests.scaleout import seed_group


@pytest.fixture
def counting(settings):
    for provider in running(CountingProvider):
        settings.NOTIFY = {
            **settings.NOTIFY,
            "CHANNELS": {
                **settings.NOTIFY["CHANNELS"],
                "counting": {
                    "BACKEND": "tests.peers.counting_provider.CountingChannel",
                    "OPTIONS": {"URL": provider.url},
                },
            },
        }
        yield provider


def pending_deliveries(count: int) -> list[int]:
    category = Category.objects.create(key="orders", name="Orders")
    seed_group("crew", count)
    Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )
    notify.trigger("order.shipped", {"order_id": "L"})
    for event_id in claim_events(limit=10, ttl=60):
        process_event(event_id)
    return list(Delivery.objects.order_by("pk").values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_live_workers_claim_is_extended_and_a_dead_ones_expires(counting):
    pending_deliveries(3)
    ids, token = claim_due_deliveries(limit=10, ttl=0.6)
    with Lease(token, ttl=0.6, keep_for=30) as lease:
        time.sleep(1.5)  # well past the first claim's expiry
        assert claim_due_deliveries(limit=10, ttl=0.6)[0] == []  # nobody else takes it
        assert lease.beats >= 3
        assert set(Delivery.objects.values_list("claimed_until", flat=True)) == {lease.token}
    # The worker is gone: no beat, and the claim expires one TTL later.
    time.sleep(0.8)
    again, _ = claim_due_deliveries(limit=10, ttl=60)
    assert sorted(again) == sorted(ids)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_stops_after_the_longest_a_batch_may_run(counting):
    pending_deliveries(1)
    _, token = claim_due_deliveries(limit=10, ttl=0.4)
    with Lease(token, ttl=0.4, keep_for=0.5) as lease:
        time.sleep(1.2)
        beats = lease.beats
        time.sleep(0.5)
        assert lease.beats == beats  # no beat after keep_for
    assert 1 <= beats <= 6
    assert claim_due_deliveries(limit=10, ttl=60)[0] != []  # expired while "alive"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_flight", [1, None], ids=["one-at-a-time", "default"])
def test_a_batch_past_worker_batch_seconds_puts_the_rest_back(settings, counting, in_flight):
    """No send starts past WORKER_BATCH_SECONDS (0.5 s, sends taking 0.3 s):
    one at a time, at most 3 went out; at the default (SENDS_IN_FLIGHT sends
    in flight) at most two rounds of them."""
    counting.latency = 0.3
    in_flight = in_flight or conf.DEFAULTS["SENDS_IN_FLIGHT"]
    total = 6 if in_flight == 1 else 3 * in_flight
    settings.NOTIFY = {
        **settings.NOTIFY,
        "WORKER_BATCH_SECONDS": 0.5,
        "SENDS_IN_FLIGHT": in_flight,
    }
    all_ids = pending_deliveries(total)
    ids, token = claim_due_deliveries(limit=total, ttl=60)

    stats = deliver(ids, token)

    most = 3 if in_flight == 1 else 2 * in_flight
    assert 1 <= stats.sent <= most and stats.released == total - stats.sent
    back = Delivery.objects.filter(status=Status.PENDING)
    assert back.count() == stats.released
    assert set(back.values_list("attempts", "claimed_until", "sending_since")) == {(0, None, None)}
    assert DeliveryAttempt.objects.count() == stats.sent
    assert sorted(counting.accepted()) == sorted(
        Delivery.objects.filter(status=Status.SENT).values_list("pk", flat=True)
    )
    assert len(all_ids) == total


def test_a_suspect_has_the_gate_to_itself():
    gate = SendGate()
    events = []
    ordinary_in = threading.Event()
    release_ordinary = threading.Event()

    def ordinary():
        with gate.shared():
            events.append("ordinary in")
            ordinary_in.set()
            release_ordinary.wait(5)
            events.append("ordinary out")

    def suspect():
        with gate.exclusive():
            events.append("suspect")

    first = threading.Thread(target=ordinary)
    first.start()
    ordinary_in.wait(5)
    second = threading.Thread(target=suspect)
    second.start()
    time.sleep(0.2)
    assert events == ["ordinary in"]  # the suspect waits for the send in flight
    release_ordinary.set()
    first.join(5)
    second.join(5)
    assert events == ["ordinary in", "ordinary out", "suspect"]


# -- checks ----------------------------------------------------------------------------------


def test_the_defaults_are_coherent(settings, smtp_peer):
    """Every shipped channel has a finite time-out below the claim time, SMTP
    included with the README's options (no timeout of their own)."""
    settings.MAILERS = {
        **settings.MAILERS,
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": smtp_peer.host, "port": smtp_peer.port},
        },
    }
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {}},
            "hook": {
                "BACKEND": "channels.webhook.SignedWebhookChannel",
                "OPTIONS": {"SECRET": "s" * 32},
            },
        },
    }
    assert check_claims() == []
    assert send_timeout(build_channel("email")) == 30.0
    assert send_timeout(build_channel("hook")) == 10.0
    ttl = conf.DEFAULTS["CLAIM_TTL"]
    # A batch's claim is extended until WORKER_BATCH_SECONDS; the send in flight
    # then ends within its time-out, well inside the claim's last CLAIM_TTL.
    assert (
        conf.DEFAULTS["WORKER_BATCH_SECONDS"] + 30.0 < conf.DEFAULTS["WORKER_BATCH_SECONDS"] + ttl
    )


def test_a_channel_without_a_finite_time_out_is_refused(settings, counting):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "counting": {
                "BACKEND": "tests.peers.counting_provider.CountingChannel",
                "OPTIONS": {"URL": counting.url, "TIMEOUT": float("inf")},
            },
        },
    }
    [error] = check_claims()
    assert error.id == "notify.E031" and "'counting'" in error.msg


def test_a_time_out_as_long_as_the_claim_is_warned_about(settings, counting):
    settings.NOTIFY = {**settings.NOTIFY, "CLAIM_TTL": 5.0}  # the channel's default is 10 s
    warnings = [w for w in check_claims() if "'counting'" in w.msg]
    assert [w.id for w in warnings] == ["notify.W030"] and "CLAIM_TTL" in warnings[0].msg


@pytest.mark.parametrize("value", [0, -1, "60", None])
def test_claim_settings_must_be_positive_numbers(settings, value):
    settings.NOTIFY = {**settings.NOTIFY, "WORKER_BATCH_SECONDS": value}
    [error] = check_claims()
    assert error.id == "notify.E030" and "WORKER_BATCH_SECONDS" in error.msg


def test_claim_tokens_differ_at_the_same_instant():
    from notify.outbox.rows import claim_token

    now = timezone.now()
    tokens = {claim_token(now, 60) for _ in range(50)}
    assert len(tokens) > 40
    assert all(now + timedelta(seconds=60) < t < now + timedelta(seconds=60.001) for t in tokens)
