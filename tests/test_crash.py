"""Crash safety under kill -9, on PostgreSQL, with real worker processes.

10,000 deliveries to a local provider that counts what it receives per
delivery id, while one of two workers is killed with SIGKILL every 2 seconds
(and started again at once): real ``celery -A notify worker`` processes over
RabbitMQ with the scheduler's relay, then real ``manage.py notify worker``
processes (the in-process pool). Afterwards our books must be exact (every
delivery sent, exactly one successful attempt each) and the provider may have
seen a delivery twice only when a worker died between sending it and
recording it: at most kills x the batches in flight per worker.

``NOTIFY_CRASH_DELIVERIES`` changes the size (default 10,000).
"""

from __future__ import annotations

import os
import time

import pytest
from django.db import connection

import notify
from channels.base import Status
from notify import celery as notify_celery
from notify.models import Category, Delivery, Event
from rules.models import Rule

from .peers.counting_provider import CountingProvider
from .peers.http import running
from .scaleout import (
    RABBITMQ_URL,
    celery_worker,
    final_count,
    notify_worker,
    our_books,
    process_env,
    reachable,
    scheduler,
    seed_group,
    unique_queue,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DELIVERIES = int(os.environ.get("NOTIFY_CRASH_DELIVERIES", "10000"))
KILL_EVERY = 2.0
BATCH = 50
CONCURRENCY = 2  # pool processes (Celery) or threads (in-process) per worker
TIME_LIMIT = 55.0
# Short claims, so work a killed worker held is taken again within seconds.
OVERRIDES = {
    "CLAIM_TTL": 8.0,
    "WORKER_BATCH_SIZE": BATCH,
    "POLL_INTERVAL": 0.2,
    "RELAY_INTERVAL": 1.0,
    "RELAY_GRACE": 4.0,
}


@pytest.fixture
def postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (SKIP LOCKED claims shared by processes)")


@pytest.fixture
def provider():
    yield from running(CountingProvider)


def crew_rule(count: int) -> Rule:
    category = Category.objects.create(key="orders", name="Orders")
    seed_group("crew", count)
    return Rule.objects.create(
        name="crew",
        event_type="order.shipped",
        category=category,
        recipients=["group:crew"],
        channels=["counting"],
        message="order_shipped",
    )


def kill_one_every(workers, seconds: float, total: int, limit: float) -> tuple[int, float]:
    """Kill -9 the workers in turn every ``seconds`` (each started again at once)
    until ``total`` deliveries are final; return the kills and the time taken."""
    started = time.monotonic()
    kills = 0
    next_kill = started + seconds
    while final_count() < total and time.monotonic() - started < limit:
        if time.monotonic() >= next_kill:
            victim = workers[kills % len(workers)]
            victim.kill()
            kills += 1
            victim.start()
            next_kill += seconds
        time.sleep(0.05)
    return kills, time.monotonic() - started


def assert_exact_books_and_bounded_duplicates(provider, total: int, kills: int) -> None:
    books = our_books()
    assert books["statuses"] == {Status.SENT: total}, books
    assert books["sent_twice"] == [], books
    assert books["sent_attempts"] == total
    accepted = provider.accepted()
    ids = set(Delivery.objects.values_list("pk", flat=True))
    assert set(accepted) == ids  # nothing lost: the provider got every one
    duplicates = sum(n - 1 for n in accepted.values())
    assert duplicates <= kills * CONCURRENCY * BATCH, (duplicates, kills)
    print(f"{total} deliveries, {kills} kills, {duplicates} duplicates at the provider")


def test_kill_9_a_celery_worker_every_2_s(postgres, settings, tmp_path, provider):
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    crew_rule(DELIVERIES)
    queue = unique_queue()
    env = process_env(
        tmp_path / "var",
        provider_url=provider.url,
        broker_url=RABBITMQ_URL,
        queue=queue,
        overrides=OVERRIDES,
    )
    settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": RABBITMQ_URL, "CELERY_QUEUE": queue}
    notify_celery.configure()
    workers = [celery_worker(f"w{i}", env, tmp_path, concurrency=CONCURRENCY) for i in (1, 2)]
    relay = scheduler("scheduler", env, tmp_path)
    try:
        for process in (*workers, relay):
            process.start()
        for process in (*workers, relay):
            process.wait_ready(90)
        event = notify.trigger("order.shipped", {"order_id": "K-9"})  # handed off at commit

        kills, took = kill_one_every(workers, KILL_EVERY, DELIVERIES, TIME_LIMIT)

        assert final_count() == DELIVERIES, (our_books(), took, workers[0].text()[-3000:])
    finally:
        for process in (*workers, relay):
            process.stop()
    assert Event.objects.get(pk=event.pk).status == Event.State.PROCESSED
    assert kills >= 3
    assert_exact_books_and_bounded_duplicates(provider, DELIVERIES, kills)


def test_kill_9_an_in_process_worker_every_2_s(postgres, tmp_path, provider):
    crew_rule(DELIVERIES)
    env = process_env(tmp_path / "var", provider_url=provider.url, overrides=OVERRIDES)
    workers = [notify_worker(f"p{i}", env, tmp_path, threads=CONCURRENCY) for i in (1, 2)]
    try:
        for process in workers:
            process.start()
        for process in workers:
            process.wait_ready(90)
        notify.trigger("order.shipped", {"order_id": "K-9"})  # the pools poll for it

        kills, took = kill_one_every(workers, KILL_EVERY, DELIVERIES, TIME_LIMIT)

        assert final_count() == DELIVERIES, (our_books(), took, workers[0].text()[-3000:])
    finally:
        for process in workers:
            process.stop()
    assert kills >= 3
    assert_exact_books_and_bounded_duplicates(provider, DELIVERIES, kills)
