"""Delivery: render and send M emails to a local SMTP server from one worker;
then M deliveries over HTTP from 1 and 2 worker processes (see ``http_delivery``).

An aiosmtpd server on 127.0.0.1 (a free port, its own process: see
``smtp_peer``) counts what it receives; ``MAILERS["default"]`` points Django's SMTP backend
at it. Each run fans out one event to M users on the email channel (untimed),
then times ``notify.runtime.worker.run_until_idle()`` in this thread until every
delivery is sent: claim, load, decide again, render, send, record.

The baseline, in the same run: the same number of ``EmailMultiAlternatives``
with the same content, built and sent through one open SMTP connection, with
no database and no rendering.

Then M more emails from one worker process as shipped (``worker_at_defaults``):
``WORKER_THREADS`` (2) threads, each with its own SMTP session, each running
the same loop until nothing is due; against the same baseline.

``NOTIFY_BENCH_DELIVERY_HTTP=0`` in the environment skips the HTTP half (its
figures are then absent), for a quicker look at the email figures alone.
"""

from __future__ import annotations

import os
import sys
import threading
from email.utils import make_msgid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.mail import EmailMultiAlternatives, mailers
from django.db import connections

from bench import http_delivery
from bench.fanout import seed_users
from bench.measure import Stopwatch, count_queries, phase_timers, profile_call
from bench.registry import Context, Figure, Workload, register
from bench.smtp_peer import SmtpPeer
from channels.email import EmailChannel
from notify import conf
from notify.delivery import send as dispatch
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, DeliveryAttempt, Event
from notify.models.status import Status
from notify.runtime import worker
from notify.runtime.worker import run_until_idle
from rules.index import rule_index
from rules.models import Rule

EVENT_TYPE = "bench.delivery"


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"delivery: seeding {ctx.emails:,} users, starting a local SMTP server")
    category = Category.objects.create(key="bench-mail", name="Bench mail")
    seed_users("mail", ctx.emails, {"bench-mail": ctx.emails})
    # seed_users leaves 5% without an address; every recipient here should get mail.
    Group.objects.get(name="bench-mail").user_set.filter(email="").update(
        email="fallback@example.com"
    )
    Rule.objects.create(
        name="bench delivery",
        event_type=EVENT_TYPE,
        category=category,
        recipients=["group:bench-mail"],
        channels=["email"],
        message="order_shipped",
    )
    rule_index.clear()
    connections.close_all()  # the peer is forked: it must not inherit a connection
    peer = SmtpPeer()
    peer.start()
    previous = getattr(settings, "MAILERS", None)
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": peer.port, "timeout": 30},
        }
    }
    http = http_delivery.setup(ctx, category) if _with_http() else None
    return {"peer": peer, "previous_mailers": previous, "http": http}


def teardown(state: dict[str, Any]) -> None:
    state["peer"].stop()
    if state["http"] is not None:
        http_delivery.teardown(state["http"])
    if state["previous_mailers"] is not None:
        settings.MAILERS = state["previous_mailers"]


def _with_http() -> bool:
    return os.environ.get("NOTIFY_BENCH_DELIVERY_HTTP", "1") != "0"


# Where the worker spends its time: (where the name is looked up, name, label).
PHASES = [
    (worker, "claim_due_deliveries", "claim"),
    (worker, "deliver", "deliver"),
    (dispatch, "load_preferences", "preferences"),
    (dispatch, "build_message", "render"),
    (EmailChannel, "send", "send"),
    (EmailChannel, "close", "close"),
    (dispatch, "record_outcomes", "record"),
]


def new_batch(ctx: Context) -> tuple[Event, int]:
    """One event fanned out (untimed) to M pending email deliveries."""
    event = Event.objects.create(
        type=EVENT_TYPE,
        payload={"order_id": "D-1", "total": 80, "url": "https://shop.example.com/orders/D-1"},
    )
    process_event(event.pk)
    pending = Delivery.objects.filter(notification__event=event, status=Status.PENDING).count()
    return event, pending


def baseline_send(count: int, sample: dict[str, Any]) -> dict[str, Any]:
    """``count`` prebuilt-content emails through one open SMTP connection."""
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or None
    with Stopwatch() as watch:
        connection = mailers["default"]
        connection.open()
        try:
            for number in range(count):
                email = EmailMultiAlternatives(
                    subject=sample["subject"],
                    body=sample["text"],
                    to=[sample["to"]],
                    headers={"Message-ID": make_msgid(domain=domain), **sample["headers"]},
                )
                if sample.get("html"):
                    email.attach_alternative(sample["html"], "text/html")
                email.extra_headers["X-Notify-Delivery"] = str(number)
                connection.send_messages([email])
        finally:
            connection.close()
    return {"emails": count, "seconds": watch.seconds, "emails_per_s": count / watch.seconds}


def worker_at_defaults(ctx: Context, peer: SmtpPeer) -> dict[str, Any]:
    """M emails from one worker process as shipped: ``WORKER_THREADS`` threads
    (2), each with its own SMTP session, each running the worker loop until
    nothing is due (``notify worker`` runs the same loop in the same threads)."""
    event, pending = new_batch(ctx)
    threads = int(conf.get("WORKER_THREADS"))
    ctx.say(f"delivery run {ctx.run_number}: sending {pending:,} emails from {threads} threads")
    received_before = peer.messages
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            run_until_idle()
        except BaseException as exc:  # reported below, in the measuring thread
            errors.append(exc)
        finally:
            connections.close_all()

    connections.close_all()  # each thread opens its own
    with Stopwatch() as watch:
        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    if errors:
        raise errors[0]
    received = peer.wait_for(received_before + pending) - received_before
    sent = Delivery.objects.filter(notification__event=event, status=Status.SENT).count()
    Event.objects.filter(pk=event.pk).delete()
    if sent != pending or received != pending:
        raise RuntimeError(
            f"delivery at defaults: {pending} pending, {sent} marked sent, {received} received"
        )
    return {"threads": threads, "seconds": watch.seconds, "emails_per_s": sent / watch.seconds}


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    peer: SmtpPeer = state["peer"]
    if ctx.profile and ctx.run_number == 1:
        path = f"{ctx.profile}.{ctx.database}.delivery.prof"
        ctx.say(f"delivery: profiling one worker loop into {path}")
        event, _ = new_batch(ctx)
        print(profile_call(run_until_idle, path)[1], file=sys.stderr)
        Event.objects.filter(pk=event.pk).delete()
    event, pending = new_batch(ctx)
    ctx.say(f"delivery run {ctx.run_number}: sending {pending:,} emails from one worker")
    received_before = peer.messages
    with phase_timers(PHASES) as phases, count_queries() as queries, Stopwatch() as watch:
        run_until_idle()
    inside = ("preferences", "render", "send", "close", "record")
    phases["load_and_decide"] = phases["deliver"] - sum(phases[k] for k in inside)
    phases["other"] = watch.seconds - phases["claim"] - phases.pop("deliver")
    received = peer.wait_for(received_before + pending) - received_before
    sent = Delivery.objects.filter(notification__event=event, status=Status.SENT).count()
    if sent != pending or received != pending:
        raise RuntimeError(
            f"delivery workload: {pending} pending, {sent} marked sent, {received} received"
        )
    sample = (
        DeliveryAttempt.objects.filter(delivery__notification__event=event)
        .values_list("sent", flat=True)
        .first()
    )
    baseline = baseline_send(pending, sample)
    if peer.wait_for(received_before + 2 * pending) - received_before != 2 * pending:
        raise RuntimeError("delivery baseline: the SMTP server did not receive every email")
    Event.objects.filter(pk=event.pk).delete()  # cascades: keep the database the same size
    at_defaults = worker_at_defaults(ctx, peer)
    figures = {
        "emails": sent,
        "seconds": watch.seconds,
        "emails_per_s": sent / watch.seconds,
        "queries": queries.count,
        "queries_per_email": queries.count / sent,
        "batch_size": conf.get("WORKER_BATCH_SIZE"),
        "phases": phases,
        "baseline": baseline,
        "ratio": watch.seconds / baseline["seconds"],
        "defaults": at_defaults,
        "http": http_delivery.run(ctx, state["http"]) if state["http"] is not None else {},
    }
    ctx.say(
        f"delivery run {ctx.run_number}: {figures['emails_per_s']:,.0f} emails/s, "
        f"baseline {baseline['emails_per_s']:,.0f} emails/s"
    )
    return figures


register(
    Workload(
        name="delivery",
        title="Delivery: M emails to a local SMTP server from one worker thread; "
        "M deliveries to a local HTTP provider from 1 and 2 worker processes",
        setup=setup,
        teardown=teardown,
        run=run,
        figures=(
            Figure("emails", "emails"),
            Figure("time", "seconds", "s", baseline="baseline.seconds"),
            Figure("  in claim_due_deliveries", "phases.claim", "s"),
            Figure("  in deliver: load + decide", "phases.load_and_decide", "s"),
            Figure("  in deliver: load_preferences", "phases.preferences", "s"),
            Figure("  in deliver: build_message (render)", "phases.render", "s"),
            Figure("  in deliver: EmailChannel.send", "phases.send", "s"),
            Figure("  in deliver: EmailChannel.close", "phases.close", "s"),
            Figure("  in deliver: record_outcomes", "phases.record", "s"),
            Figure("  elsewhere", "phases.other", "s"),
            Figure("emails/s", "emails_per_s", baseline="baseline.emails_per_s"),
            Figure("queries", "queries"),
            Figure("queries per email", "queries_per_email"),
            Figure("time / baseline time", "ratio", "x"),
            Figure(
                "emails/s, one worker process at its defaults (WORKER_THREADS threads)",
                "defaults.emails_per_s",
                baseline="baseline.emails_per_s",
            ),
            Figure(
                "HTTP deliveries/s, 1 notify worker process",
                "http.inprocess_1.deliveries_per_s",
                baseline="http.baseline.requests_per_s",
            ),
            Figure(
                "HTTP deliveries/s, 2 notify worker processes", "http.inprocess_2.deliveries_per_s"
            ),
            Figure("  2 processes / 1", "http.inprocess_scaling", "x"),
            Figure(
                "HTTP deliveries/s, Celery, 1 pool process",
                "http.celery_1.deliveries_per_s",
                baseline="http.baseline.requests_per_s",
            ),
            Figure("HTTP deliveries/s, Celery, 2 pool processes", "http.celery_2.deliveries_per_s"),
            Figure("  2 processes / 1", "http.celery_scaling", "x"),
        ),
    )
)
