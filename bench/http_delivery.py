"""Delivery over HTTP from worker processes: in-process pools and Celery, 1 and 2.

Part of the ``delivery`` workload. Each run fans out one event to the M users
on the ``bench-http`` channel (``http_peer.LocalHttpChannel`` posting to a
local provider in a process of its own), holds the deliveries (due in an
hour), starts the worker processes and waits until they are ready, then makes
the deliveries due (and, for Celery, hands their ids to the broker as the
fan-out task would) and times until every one is recorded sent:

* ``inprocess_1`` / ``inprocess_2``: 1 or 2 ``manage.py notify worker``
  processes (two threads each, the default), polling the outbox;
* ``celery_1`` / ``celery_2``: one ``celery -A notify worker`` with 1 or 2
  prefork pool processes, over ``NOTIFY_BENCH_BROKER_URL`` (default: RabbitMQ
  on 127.0.0.1), on a queue of the benchmark's own.

The baseline, in the same run: M POSTs of the same payload through one
``requests`` session (keep-alive) to the same provider, from one thread, with
no database and no rendering.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from bench.http_peer import HttpPeer
from bench.processes import bench_env, celery_worker, notify_worker
from bench.registry import Context
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, Event
from notify.models.status import Status
from rules.index import rule_index
from rules.models import Rule

EVENT_TYPE = "bench.http"
ALIAS = "bench-http"
VARIANTS = (("inprocess", 1), ("inprocess", 2), ("celery", 1), ("celery", 2))
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def broker_url() -> str:
    return os.environ.get("NOTIFY_BENCH_BROKER_URL") or DEFAULT_BROKER_URL


def broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    default = 6379 if parts.scheme.startswith("redis") else 5672
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), 2):
            return True
    except OSError:
        return False


def setup(ctx: Context, category: Category) -> dict[str, Any]:
    """The rule and channel for ``bench.http``, and the provider (started)."""
    peer = HttpPeer()
    peer.start()
    http_rule("bench http delivery", EVENT_TYPE, category, "bench-mail", peer.url)
    return {"peer": peer, "queue": f"notify-bench-{os.getpid()}"}


def http_rule(
    name: str, event_type: str, category: Category, group: str, url: str, **channel: Any
) -> None:
    """The ``bench-http`` channel posting to ``url`` (``channel``: more keys of
    its entry, e.g. ``CONCURRENCY``) in this process, and a rule sending
    ``event_type`` to ``group`` through it."""
    entry = {"BACKEND": "bench.http_peer.LocalHttpChannel", "OPTIONS": {"URL": url}, **channel}
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], ALIAS: entry},
    }
    Rule.objects.create(
        name=name,
        event_type=event_type,
        category=category,
        recipients=[f"group:{group}"],
        channels=[ALIAS],
        message="order_shipped",
    )
    rule_index.clear()


def teardown(state: dict[str, Any]) -> None:
    state["peer"].stop()
    if broker_reachable(broker_url()):
        # Celery declared the queue and its exchange durable: leave nothing behind.
        from kombu import Connection

        with contextlib.suppress(Exception), Connection(broker_url(), connect_timeout=3) as conn:
            channel = conn.channel()
            channel.queue_delete(state["queue"])
            channel.exchange_delete(state["queue"])


def held_batch(count: int, event_type: str = EVENT_TYPE) -> tuple[Event, list[int]]:
    """One event of ``event_type`` fanned out to ``count`` pending deliveries
    (its rule's channel), held for an hour."""
    event = Event.objects.create(type=event_type, payload={"order_id": "H-1", "total": 80})
    process_event(event.pk)
    pending = Delivery.objects.filter(notification__event=event, status=Status.PENDING)
    ids = list(pending.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    if len(ids) != count:
        raise RuntimeError(f"{event_type}: {len(ids)} pending deliveries, expected {count}")
    return event, ids


def start_workers(engine: str, processes: int, state: dict[str, Any]):
    env = bench_env(NOTIFY_BENCH_HTTP_URL=state["peer"].url)
    if engine == "inprocess":
        workers = [notify_worker(2, env) for _ in range(processes)]
    else:
        env.update(NOTIFY_BROKER_URL=broker_url(), NOTIFY_CELERY_QUEUE=state["queue"])
        workers = [celery_worker(processes, state["queue"], env)]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.wait_ready(120)
    except Exception:
        for worker in workers:
            worker.stop()
        raise
    return workers


@contextlib.contextmanager
def publishing_to_broker(queue: str):
    """This process publishes to the benchmark's broker and queue meanwhile."""
    from notify.celery import configure

    previous = settings.NOTIFY
    settings.NOTIFY = {**previous, "BROKER_URL": broker_url(), "CELERY_QUEUE": queue}
    configure()
    try:
        yield
    finally:
        settings.NOTIFY = previous
        configure()


def measure_variant(engine: str, processes: int, state: dict[str, Any], count: int) -> dict:
    peer: HttpPeer = state["peer"]
    event, ids = held_batch(count)
    workers = start_workers(engine, processes, state)
    try:
        before = peer.requests
        started = time.perf_counter()
        Delivery.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())
        if engine == "celery":
            from notify.runtime.handoff import CeleryDispatcher

            with publishing_to_broker(state["queue"]):
                CeleryDispatcher().hand_off_deliveries(ids)
        sent = Delivery.objects.filter(pk__in=ids, status=Status.SENT)
        deadline = time.monotonic() + 300
        while sent.count() < count and time.monotonic() < deadline:
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.stop()
    done = sent.count()
    received = peer.wait_for(before + count) - before
    Event.objects.filter(pk=event.pk).delete()
    if done != count or received != count:
        raise RuntimeError(
            f"http delivery ({engine}, {processes}): {count} due, {done} sent, {received} received"
        )
    return {"deliveries": count, "seconds": seconds, "deliveries_per_s": count / seconds}


def baseline(peer: HttpPeer, count: int) -> dict[str, Any]:
    """The same POSTs through one keep-alive session: no database, no rendering."""
    body = {"id": 0, "subject": "Your order H-1 has shipped", "text": "Order H-1 has shipped."}
    with requests.Session() as session:
        session.trust_env = False
        started = time.perf_counter()
        for number in range(count):
            body["id"] = number
            response = session.post(
                peer.url, json=body, headers={"X-Notify-Delivery": str(number)}, timeout=10
            )
            response.raise_for_status()
        seconds = time.perf_counter() - started
    return {"requests": count, "seconds": seconds, "requests_per_s": count / seconds}


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    count = ctx.emails
    figures: dict[str, Any] = {}
    celery_ok = broker_reachable(broker_url())
    for engine, processes in VARIANTS:
        key = f"{engine}_{processes}"
        if engine == "celery" and not celery_ok:
            ctx.say(f"delivery over HTTP: no broker at {broker_url()}; skipping {key}")
            continue
        figures[key] = measure_variant(engine, processes, state, count)
        ctx.say(
            f"delivery over HTTP, {engine}, {processes} worker process(es): "
            f"{figures[key]['deliveries_per_s']:,.0f} deliveries/s"
        )
    for engine in ("inprocess", "celery"):
        one, two = figures.get(f"{engine}_1"), figures.get(f"{engine}_2")
        if one and two:
            figures[f"{engine}_scaling"] = two["deliveries_per_s"] / one["deliveries_per_s"]
    figures["baseline"] = baseline(state["peer"], count)
    return figures
