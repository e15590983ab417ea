"""Digests: N users with items waiting, every digest built and sent in one call.

Setup seeds N users (``--emails``) in five time zones, all on daily digests,
and points ``MAILERS["default"]`` at a local SMTP server (its own process, see
``smtp_peer``). Each run fans out five events to all of them (untimed: two
categories, so digests group), makes the items due (they waited since the day
before), then times ``build_and_send_due_digests()`` from one thread: find the
due periods, create the rows and claim the items, decide again, render each
item's title and the digest, send, record on the rows and the items.

The baseline, in the same run: N emails with the content of one of the
digests, built and sent through one open SMTP connection, with no database and
no rendering.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from django.utils import timezone

from bench.delivery import baseline_send
from bench.fanout import seed_users
from bench.measure import Stopwatch, count_queries, phase_timers, profile_call
from bench.registry import Context, Figure, Workload, register
from bench.smtp_peer import SmtpPeer
from channels.email import EmailChannel
from notify.delivery.inflight import concurrency_of
from notify.fanout.pipeline import process_event
from notify.models import Category, Delivery, Digest, Event, UserSettings
from notify.models.status import Status
from notify.registry import build_channel
from notify.scheduling.digests import send as digest_delivery
from rules.index import rule_index
from rules.models import Rule

GROUP = "bench-digest"
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney")
EVENTS = (  # (event type, payload): three orders and two comments per user per run
    ("bench.digest_order", {"order_id": "G-1", "url": "https://shop.example.com/orders/G-1"}),
    ("bench.digest_order", {"order_id": "G-2"}),
    ("bench.digest_order", {"order_id": "G-3"}),
    ("bench.digest_comment", {"title": "the roadmap", "comment": "+1"}),
    ("bench.digest_comment", {"title": "the launch", "comment": "Ship it"}),
)


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"digest: seeding {ctx.emails:,} digest users, starting a local SMTP server")
    orders = Category.objects.create(key="bench-digest-orders", name="Orders", default_mode="daily")
    comments = Category.objects.create(
        key="bench-digest-comments", name="Comments", default_mode="daily"
    )
    ids = seed_users("digest", ctx.emails, {GROUP: ctx.emails})
    Group.objects.get(name=GROUP).user_set.filter(email="").update(email="fallback@example.com")
    UserSettings.objects.bulk_create(
        [
            UserSettings(user_id=pk, timezone=ZONES[i % len(ZONES)], digest_hour=i % 24)
            for i, pk in enumerate(ids)
        ],
        batch_size=5000,
    )
    for category, event_type, message in (
        (orders, "bench.digest_order", "order_shipped"),
        (comments, "bench.digest_comment", "comment_posted"),
    ):
        Rule.objects.create(
            name=f"bench {event_type}",
            event_type=event_type,
            category=category,
            recipients=[f"group:{GROUP}"],
            channels=["email"],
            message=message,
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
    return {"peer": peer, "previous_mailers": previous}


def teardown(state: dict[str, Any]) -> None:
    state["peer"].stop()
    if state["previous_mailers"] is not None:
        settings.MAILERS = state["previous_mailers"]


PHASES = [
    (digest_delivery, "build_due_digests", "build"),
    (digest_delivery, "send_due_digests", "send"),
    (digest_delivery, "build_digest_message", "render"),
    (EmailChannel, "send", "smtp"),
    (digest_delivery, "record_digests", "record"),
]


def new_items() -> tuple[list[int], int]:
    """Five events fanned out (untimed), their items made due: waiting since yesterday."""
    event_ids = []
    for event_type, payload in EVENTS:
        event = Event.objects.create(type=event_type, payload=payload)
        process_event(event.pk)
        event_ids.append(event.pk)
    items = Delivery.objects.filter(
        notification__event_id__in=event_ids, status=Status.DIGEST, digest__isnull=True
    )
    count = items.update(updated_at=timezone.now() - timedelta(days=2))
    return event_ids, count


def profile_digests(ctx: Context, state: dict[str, Any]) -> None:
    """``--profile``: one untimed round of every digest under cProfile."""
    path = f"{ctx.profile}.{ctx.database}.digest.prof"
    ctx.say(f"digest: profiling one round into {path}")
    event_ids, _ = new_items()
    _, text = profile_call(digest_delivery.build_and_send_due_digests, path)
    print(text, file=sys.stderr)
    Digest.objects.all().delete()
    Event.objects.filter(pk__in=event_ids).delete()


# Sends in flight for the second round: the README's option for slow providers;
# email over SMTP then has its own limit, 8 SMTP sessions.
IN_FLIGHT = 64


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    if ctx.profile and ctx.run_number == 1:
        profile_digests(ctx, state)
    figures = one_round(ctx, state, "defaults")
    previous = settings.NOTIFY
    settings.NOTIFY = {**previous, "SENDS_IN_FLIGHT": IN_FLIGHT}
    try:
        figures["in_flight"] = one_round(ctx, state, f"SENDS_IN_FLIGHT {IN_FLIGHT}")
    finally:
        settings.NOTIFY = previous
    return figures


def one_round(ctx: Context, state: dict[str, Any], label: str) -> dict[str, Any]:
    """Every digest built and sent once, timed, then the same-run baseline: the
    same emails sent plainly through as many SMTP sessions as the round had."""
    peer: SmtpPeer = state["peer"]
    event_ids, items = new_items()
    ctx.say(f"digest run {ctx.run_number} ({label}): {items:,} items for {ctx.emails:,} users")
    received_before = peer.messages
    sessions = concurrency_of("email", build_channel("email"))
    cpu = time.process_time()
    with phase_timers(PHASES) as phases, count_queries() as queries, Stopwatch() as watch:
        stats = digest_delivery.build_and_send_due_digests()
    cpu = time.process_time() - cpu  # this process only: the SMTP peer has its own
    received = peer.wait_for(received_before + stats.sent) - received_before
    sent = Digest.objects.filter(status=Status.SENT).count()
    if not (stats.sent == sent == received == ctx.emails and stats.items == items):
        raise RuntimeError(
            f"digest workload: {ctx.emails} users, {items} items; built {stats.built} "
            f"with {stats.items} items, {sent} marked sent, {received} received"
        )
    sample = Digest.objects.filter(status=Status.SENT).values_list("sent", flat=True).first()
    baseline = baseline_sessions(sent, sample, sessions)
    if peer.wait_for(received_before + 2 * sent) - received_before != 2 * sent:
        raise RuntimeError("digest baseline: the SMTP server did not receive every email")
    # Keep the database the same size for the next run.
    Digest.objects.all().delete()
    Event.objects.filter(pk__in=event_ids).delete()
    figures = {
        "users": ctx.emails,
        "items": items,
        "digests": sent,
        "sessions": sessions,
        "seconds": watch.seconds,
        "digests_per_s": sent / watch.seconds,
        "items_per_s": items / watch.seconds,
        "cpu_ms_per_digest": 1000 * cpu / sent,
        "queries": queries.count,
        "queries_per_digest": queries.count / sent,
        "phases": phases,
        "baseline": baseline,
        "ratio": watch.seconds / baseline["seconds"],
    }
    ctx.say(
        f"digest run {ctx.run_number} ({label}): {figures['digests_per_s']:,.0f} digests/s "
        f"({figures['items_per_s']:,.0f} items/s), baseline {baseline['emails_per_s']:,.0f} "
        f"emails/s through {sessions} session(s)"
    )
    return figures


def baseline_sessions(count: int, sample: dict[str, Any], sessions: int) -> dict[str, Any]:
    """``baseline_send`` split over ``sessions`` threads, each its own SMTP
    connection (one session: ``baseline_send`` itself)."""
    if sessions == 1:
        return baseline_send(count, sample)
    shares = [count // sessions + (i < count % sessions) for i in range(sessions)]
    with Stopwatch() as watch, ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda n: baseline_send(n, sample), shares))
    return {"emails": count, "seconds": watch.seconds, "emails_per_s": count / watch.seconds}


register(
    Workload(
        name="digest",
        title="Digests: N users with 5 waiting items each, every digest built and sent",
        setup=setup,
        teardown=teardown,
        run=run,
        figures=(
            Figure("digests (users)", "digests"),
            Figure("items", "items"),
            Figure("time", "seconds", "s", baseline="baseline.seconds"),
            Figure("  in build_due_digests (rows + claims)", "phases.build", "s"),
            Figure("  in send_due_digests", "phases.send", "s"),
            Figure("    build_digest_message (render)", "phases.render", "s"),
            Figure("    EmailChannel.send", "phases.smtp", "s"),
            Figure("    record_digests", "phases.record", "s"),
            Figure("digests/s", "digests_per_s", baseline="baseline.emails_per_s"),
            Figure("items/s", "items_per_s"),
            Figure("CPU of this process per digest", "cpu_ms_per_digest", "ms"),
            Figure("queries", "queries"),
            Figure("queries per digest", "queries_per_digest"),
            Figure("time / baseline time", "ratio", "x"),
            Figure(f"SENDS_IN_FLIGHT {IN_FLIGHT}: SMTP sessions", "in_flight.sessions"),
            Figure(
                f"SENDS_IN_FLIGHT {IN_FLIGHT}: time",
                "in_flight.seconds",
                "s",
                baseline="in_flight.baseline.seconds",
            ),
            Figure(
                f"SENDS_IN_FLIGHT {IN_FLIGHT}: digests/s",
                "in_flight.digests_per_s",
                baseline="in_flight.baseline.emails_per_s",
            ),
            Figure(f"SENDS_IN_FLIGHT {IN_FLIGHT}: record_digests", "in_flight.phases.record", "s"),
            Figure(
                f"SENDS_IN_FLIGHT {IN_FLIGHT}: CPU per digest", "in_flight.cpu_ms_per_digest", "ms"
            ),
            Figure(
                f"SENDS_IN_FLIGHT {IN_FLIGHT}: queries per digest", "in_flight.queries_per_digest"
            ),
            Figure(f"SENDS_IN_FLIGHT {IN_FLIGHT}: time / baseline time", "in_flight.ratio", "x"),
        ),
    )
)
