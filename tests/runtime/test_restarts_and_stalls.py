"""A mail server that stalls, and a worker killed with SIGKILL mid-batch.

* an SMTP server (aiosmtpd) that holds one message 150 s before answering,
  with the README's documented SMTP options (no time-out of their own): that
  message ends with its time-out (30 s, the email channel's default) and is
  retried; every other message is received once. About 35 s.
* ``kill -9`` of a ``notify worker`` (2 threads) in the middle of its batches,
  on SQLite and PostgreSQL: the copies the provider got beyond one per
  delivery are at most the deliveries in flight at the kill (rows marked in
  flight, read right after it), and our books are exact. Claims are 3 s here
  so the restarted worker takes the lost work within seconds; the bound does
  not depend on the claim time, and the claim sequence at the default claim
  time is tested on a controlled clock in ``test_delivery_faults``.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

import notify
from channels.http import HTTP_CONCURRENCY
from notify import conf
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.outbox.rows import claim_events
from notify.runtime.worker import WorkerPool
from rules.models import Rule
from tests.peers.counting_provider import CountingProvider
from tests.peers.http import running
from tests.scaleout import (
    final_count,
    machine_to_ourselves,
    notify_worker,
    our_books,
    process_env,
    seed_group,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def group_rule(group: str, channel: str) -> Rule:
    category = Category.objects.create(key="orders", name="Orders")
    return Rule.objects.create(
        name=group,
        event_type="order.shipped",
        category=category,
        recipients=[f"group:{group}"],
        channels=[channel],
        message="order_shipped",
    )


@contextlib.contextmanager
def worker_pool(threads: int):
    pool = WorkerPool(threads=threads)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop(timeout=60)


# -- an SMTP server that stalls ----------------------------------------------------------------


def test_an_smtp_server_stalling_150_s_on_one_message(settings, smtp_peer):
    total = 20
    # README's example options, less TLS and credentials: no "timeout".
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
        },
    }
    seed_group("readers", total)
    group_rule("readers", "email")
    stalled_address = "u7@example.com"
    smtp_peer.stall(stalled_address, 150)
    with machine_to_ourselves():
        with worker_pool(2):
            notify.trigger("order.shipped", {"order_id": "STALL"})

            def settled() -> bool:
                return (
                    Delivery.objects.filter(status=Status.SENT).count() == total - 1
                    and DeliveryAttempt.objects.filter(error_code="timeout").exists()
                )

            done = wait_until(settled, 75, interval=0.5)
        stalled_at_end = smtp_peer.stalled
        received = Counter(r for m in smtp_peer.messages for r in m.rcpt_tos)
    assert done, (our_books(), received)
    stalled = Delivery.objects.get(notification__user__email=stalled_address)
    [attempt] = stalled.attempt_log.all()
    # Ended by its time-out (the email channel's default, 30 s) and retried later.
    assert (attempt.outcome, attempt.error_code) == (DeliveryAttempt.Outcome.TRANSIENT, "timeout")
    waited = (attempt.finished_at - attempt.started_at).total_seconds()
    assert 29 <= waited < 45, waited
    assert stalled.status == Status.PENDING and stalled.next_attempt_at > attempt.finished_at
    assert stalled_at_end == 1  # tried once, not again by a reclaim
    # Every other message once; the stalled one not received (the server still held it).
    assert received == Counter({f"u{i}@example.com": 1 for i in range(total) if i != 7})
    assert our_books()["sent_twice"] == []


# -- kill -9 mid-batch -------------------------------------------------------------------------

THREADS = 2


@pytest.fixture
def slow_counting(settings):
    """A counting provider answering in 0.2 s, and the ``counting`` channel here."""
    for provider in running(CountingProvider):
        provider.latency = 0.2
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


def test_kill_9_mid_batch_costs_at_most_the_sends_in_flight(tmp_path, slow_counting):
    total = 120
    seed_group("crew", total)
    group_rule("crew", "counting")
    notify.trigger("order.shipped", {"order_id": "K9"})
    for event_id in claim_events(limit=10, ttl=60):
        process_event(event_id)
    env = process_env(
        tmp_path / "var",
        provider_url=slow_counting.url,
        overrides={"CLAIM_TTL": 3.0, "POLL_INTERVAL": 0.2},
    )
    with machine_to_ourselves():
        worker = notify_worker("pool", env, tmp_path, threads=THREADS, skip_checks=True)
        try:
            worker.start()
            worker.wait_ready(90)
            # Mid-batch: some sent, most of the batches still to go.
            assert wait_until(lambda: len(slow_counting.accepted()) >= 25, 60)
            worker.kill()
            in_flight = Delivery.objects.filter(
                status=Status.SENDING, sending_since__isnull=False
            ).count()
            claimed = Delivery.objects.filter(status=Status.SENDING).count()
            worker.start()
            done = wait_until(lambda: final_count() == total, 90)
        finally:
            worker.stop()
    assert done, (our_books(), worker.text()[-3000:])
    accepted = slow_counting.accepted()
    assert set(accepted) == set(Delivery.objects.values_list("pk", flat=True))
    extra = sum(n - 1 for n in accepted.values())
    # Each thread's batch has up to min(batch size, the channel's CONCURRENCY,
    # SENDS_IN_FLIGHT) sends in flight (notify.delivery.inflight); the copies are never more.
    most = THREADS * min(
        conf.DEFAULTS["WORKER_BATCH_SIZE"], HTTP_CONCURRENCY, conf.DEFAULTS["SENDS_IN_FLIGHT"]
    )
    assert extra <= in_flight <= most, (extra, in_flight, claimed)
    books = our_books()
    assert books["statuses"] == {Status.SENT: total} and books["sent_twice"] == []
    assert books["sent_attempts"] == total
    print(f"kill -9 with {claimed} claimed, {in_flight} in flight: {extra} extra copies")
