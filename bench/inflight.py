"""Sends in flight: M deliveries to a provider answering in 100 ms, one worker thread.

An HTTP provider (``http_peer`` with ``latency``) and an SMTP server
(``smtp_peer`` with ``latency``, before each ``250``), each in a process of its
own, take ``LATENCY`` seconds per answer. Each run fans out one event to M users
(untimed) on the channel, then times ``run_until_idle()`` in this thread (one
worker thread: a worker process runs ``WORKER_THREADS`` of them) until every
delivery is sent, with ``WORKER_BATCH_SIZE`` = ``BATCH`` and the channel's
``CONCURRENCY`` as configured below (``notify.delivery.inflight``).

"One worker process": the same HTTP sends from a real ``notify worker``
process at the README's options for slow providers, counted at the receiver,
with its CPU per delivery (``bench.inflight_worker``).

Baselines, in the same run: ``BASELINE_SENDS`` of the same sends one after the
other through one ``requests.Session`` / one Django SMTP connection (what one
send at a time allows), and the ceiling ``CONCURRENCY / LATENCY``.
"""

from __future__ import annotations

import sys
import time
from email.utils import make_msgid
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.mail import EmailMultiAlternatives, mailers
from django.db import connections

from bench import inflight_worker
from bench.fanout import seed_users
from bench.http_peer import HttpPeer
from bench.measure import Stopwatch, count_queries, profile_call
from bench.registry import Context, Figure, Workload, register
from bench.smtp_peer import SmtpPeer
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, Event
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from rules.index import rule_index
from rules.models import Rule

LATENCY = 0.1
BATCH = 128
HTTP_CONCURRENCY = 64
SMTP_CONCURRENCY = 32
BASELINE_SENDS = 20
GROUP = "bench-slow"


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"inflight: seeding {ctx.emails:,} users, starting providers answering in 100 ms")
    category = Category.objects.create(key="bench-slow", name="Bench slow providers")
    seed_users("slow", ctx.emails, {GROUP: ctx.emails})
    Group.objects.get(name=GROUP).user_set.filter(email="").update(email="fallback@example.com")
    connections.close_all()  # the peers are forked: they must not inherit a connection
    http, smtp = HttpPeer(latency=LATENCY), SmtpPeer(latency=LATENCY)
    http.start()
    smtp.start()
    previous = (settings.NOTIFY, getattr(settings, "MAILERS", None))
    settings.MAILERS = {
        **(previous[1] or {}),
        "slow": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": smtp.port, "timeout": 30},
        },
    }
    channels = {
        "slow-http": {
            "BACKEND": "bench.http_peer.LocalHttpChannel",
            "OPTIONS": {"URL": http.url},
            "CONCURRENCY": HTTP_CONCURRENCY,
        },
        "slow-mail": {
            "BACKEND": "channels.email.EmailChannel",
            "OPTIONS": {"MAILER": "slow"},
            "CONCURRENCY": SMTP_CONCURRENCY,
        },
    }
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], **channels},
        "WORKER_BATCH_SIZE": BATCH,
        "SENDS_IN_FLIGHT": max(HTTP_CONCURRENCY, SMTP_CONCURRENCY),
    }
    for alias in channels:
        Rule.objects.create(
            name=f"bench {alias}",
            event_type=f"bench.{alias}",
            category=category,
            recipients=[f"group:{GROUP}"],
            channels=[alias],
            message="order_shipped",
        )
    inflight_worker.setup(category, GROUP, http.url)
    rule_index.clear()
    return {"http": http, "smtp": smtp, "previous": previous}


def teardown(state: dict[str, Any]) -> None:
    state["http"].stop()
    state["smtp"].stop()
    settings.NOTIFY, mailers_before = state["previous"]
    if mailers_before is not None:
        settings.MAILERS = mailers_before


def send_all(alias: str, peer: Any) -> dict[str, Any]:
    event = Event.objects.create(
        type=f"bench.{alias}", payload={"order_id": "S-1", "total": 80, "url": "https://x.test/"}
    )
    process_event(event.pk)
    pending = Delivery.objects.filter(notification__event=event, status=Status.PENDING).count()
    before = peer.count
    with count_queries() as queries, Stopwatch() as watch:
        run_until_idle()
    sent = Delivery.objects.filter(notification__event=event, status=Status.SENT).count()
    received = peer.wait_for(before + pending) - before
    if sent != pending or received != pending:
        raise RuntimeError(f"inflight {alias}: {pending} pending, {sent} sent, {received} received")
    Event.objects.filter(pk=event.pk).delete()
    return {
        "deliveries": sent,
        "seconds": watch.seconds,
        "deliveries_per_s": sent / watch.seconds,
        "queries_per_delivery": queries.count / sent,
    }


def http_baseline(url: str) -> dict[str, Any]:
    session = requests.Session()
    body = {"id": 0, "subject": "Your order shipped", "text": "x" * 200}
    with Stopwatch() as watch:
        for _ in range(BASELINE_SENDS):
            session.post(url, json=body, timeout=10).raise_for_status()
    session.close()
    return {"requests_per_s": BASELINE_SENDS / watch.seconds}


def smtp_baseline() -> dict[str, Any]:
    connection = mailers["slow"]
    connection.open()
    try:
        with Stopwatch() as watch:
            for _ in range(BASELINE_SENDS):
                email = EmailMultiAlternatives(
                    "Your order shipped",
                    "x" * 200,
                    to=["someone@example.com"],
                    headers={"Message-ID": make_msgid()},
                )
                email.attach_alternative("<p>" + "x" * 200 + "</p>", "text/html")
                connection.send_messages([email])
    finally:
        connection.close()
    return {"emails_per_s": BASELINE_SENDS / watch.seconds}


def profile_http(ctx: Context, state: dict[str, Any]) -> None:
    """``--profile``: one untimed HTTP round, the batch thread under cProfile."""
    path = f"{ctx.profile}.{ctx.database}.inflight.prof"
    ctx.say(f"inflight: profiling one HTTP round into {path}")
    event = Event.objects.create(type="bench.slow-http", payload={"order_id": "P-1", "total": 1})
    process_event(event.pk)
    print(profile_call(run_until_idle, path)[1], file=sys.stderr)
    Event.objects.filter(pk=event.pk).delete()


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    if ctx.profile and ctx.run_number == 1:
        profile_http(ctx, state)
    ctx.say(f"inflight run {ctx.run_number}: {ctx.emails:,} HTTP deliveries, then emails")
    http = send_all("slow-http", state["http"])
    time.sleep(0.2)
    worker = inflight_worker.measure(state["http"], ctx.emails)
    time.sleep(0.2)
    smtp = send_all("slow-mail", state["smtp"])
    http["baseline"] = http_baseline(state["http"].url)
    smtp["baseline"] = smtp_baseline()
    http["ceiling"] = HTTP_CONCURRENCY / LATENCY
    smtp["ceiling"] = SMTP_CONCURRENCY / LATENCY
    http["ratio"] = http["deliveries_per_s"] / http["baseline"]["requests_per_s"]
    smtp["ratio"] = smtp["deliveries_per_s"] / smtp["baseline"]["emails_per_s"]
    ctx.say(
        f"inflight run {ctx.run_number}: HTTP {http['deliveries_per_s']:,.0f}/s, "
        f"SMTP {smtp['deliveries_per_s']:,.0f}/s, one worker process (HTTP) "
        f"{worker['deliveries_per_s']:,.0f}/s (providers answering in 100 ms)"
    )
    worker["ratio"] = worker["deliveries_per_s"] / http["baseline"]["requests_per_s"]
    return {"latency": LATENCY, "batch_size": BATCH, "http": http, "smtp": smtp, "worker": worker}


register(
    Workload(
        name="inflight",
        title="Sends in flight: M deliveries to an HTTP provider and an SMTP server "
        "each answering in 100 ms, from one worker thread (and one worker process, HTTP)",
        setup=setup,
        teardown=teardown,
        run=run,
        figures=(
            Figure(
                "HTTP deliveries/s (100 ms provider)",
                "http.deliveries_per_s",
                baseline="http.baseline.requests_per_s",
            ),
            Figure("  / one send at a time", "http.ratio", "x"),
            Figure("  ceiling (CONCURRENCY / latency)", "http.ceiling"),
            Figure("  queries per delivery", "http.queries_per_delivery"),
            Figure(
                "HTTP deliveries/s, one worker process (2 threads, 64 in flight), at the receiver",
                "worker.deliveries_per_s",
                baseline="http.baseline.requests_per_s",
            ),
            Figure("  / one send at a time", "worker.ratio", "x"),
            Figure("  CPU ms per delivery (the worker process)", "worker.cpu_ms_per_delivery"),
            Figure(
                "emails/s (SMTP answering in 100 ms)",
                "smtp.deliveries_per_s",
                baseline="smtp.baseline.emails_per_s",
            ),
            Figure("  / one send at a time", "smtp.ratio", "x"),
            Figure("  ceiling (CONCURRENCY / latency)", "smtp.ceiling"),
            Figure("  queries per delivery", "smtp.queries_per_delivery"),
        ),
    )
)
