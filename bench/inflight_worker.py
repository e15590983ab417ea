"""Sends in flight from one worker process, counted at the receiver.

Part of the ``inflight`` workload. A real ``manage.py notify worker`` (two
threads, the default) at the README's options for slow providers
(``NOTIFY_SENDS_IN_FLIGHT=64 NOTIFY_WORKER_BATCH_SIZE=128``, the channel's
``CONCURRENCY`` 64) sends M deliveries to the HTTP provider answering in
100 ms. Each run fans out one event to the M users (held an hour, untimed),
starts the worker and waits until it is ready, makes the deliveries due and
times until the provider has received M requests; then waits until every
delivery is recorded sent. CPU: the worker process's user + system time
(``/proc``) over the timed part, per delivery.
"""

from __future__ import annotations

import time
from typing import Any

from django.utils import timezone

from bench.http_delivery import held_batch, http_rule
from bench.measure import cpu_seconds
from bench.processes import bench_env, notify_worker
from notify.models import Category, Delivery, Event
from notify.models.status import Status

EVENT_TYPE = "bench.inflight-worker"
THREADS = 2  # ``notify worker``'s default
OPTIONS = {"NOTIFY_SENDS_IN_FLIGHT": "64", "NOTIFY_WORKER_BATCH_SIZE": "128"}
CONCURRENCY = 64


def setup(category: Category, group: str, url: str) -> None:
    """The rule and, in this process (fan-out), the channel the worker sends through."""
    http_rule("bench inflight worker", EVENT_TYPE, category, group, url, CONCURRENCY=CONCURRENCY)


def measure(peer: Any, count: int) -> dict[str, Any]:
    event, ids = held_batch(count, EVENT_TYPE)
    env = bench_env(
        NOTIFY_BENCH_HTTP_URL=peer.url, NOTIFY_BENCH_HTTP_CONCURRENCY=str(CONCURRENCY), **OPTIONS
    )
    worker = notify_worker(THREADS, env).start()
    try:
        worker.wait_ready(120)
        assert worker.process is not None
        before, cpu_before = peer.count, cpu_seconds(worker.process.pid)
        started = time.perf_counter()
        Delivery.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())
        deadline = time.monotonic() + 300
        while peer.count - before < count and time.monotonic() < deadline:
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(worker.process.pid) - cpu_before
        sent = Delivery.objects.filter(pk__in=ids, status=Status.SENT)
        while sent.count() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        done = sent.count()
    finally:
        worker.stop()
    received = peer.count - before
    Event.objects.filter(pk=event.pk).delete()
    if done != count or received != count:
        raise RuntimeError(f"inflight worker: {count} due, {done} sent, {received} received")
    return {
        "deliveries": count,
        "seconds": seconds,
        "deliveries_per_s": count / seconds,
        "cpu_ms_per_delivery": cpu * 1000 / count,
        "threads": THREADS,
    }
