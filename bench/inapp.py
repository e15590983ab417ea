"""In-app items: writing a worker's batch of inbox items, per item and in bulk.

Setup seeds M users (``--emails``) and an in-app-only rule. Each run fans out
one event to all of them (untimed), builds each item's message (untimed), then
times, in the same process and database:

1. *per item* (the baseline), the way the in-app channel wrote before bulk
   writes: one ORM ``UPDATE`` (and its commit) per item;
2. *bulk*: ``store_inapp_messages`` on batches of ``BATCH`` items (a worker's
   claim), one ``UPDATE ... FROM`` and one commit per batch;
3. the whole worker path for the same items: ``run_until_idle()`` (claim, decide
   again, render, write in bulk, record outcomes and attempts).

Between timings the items are taken out of the inbox again (untimed).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from bench.fanout import seed_users
from bench.measure import Stopwatch, count_queries
from bench.registry import Context, Figure, Workload, register
from channels.base import OutgoingMessage
from notify.fanout.pipeline import process_event
from notify.inbox.store import store_inapp_messages
from notify.models import Category, Event, Notification
from notify.runtime.worker import run_until_idle
from rules.index import rule_index
from rules.models import Rule

GROUP = "bench-inapp"
EVENT_TYPE = "bench.inapp"
BATCH = 50  # what a worker claims at once (WORKER_BATCH_SIZE's default)


def setup(ctx: Context) -> dict[str, Any]:
    ctx.say(f"inapp: seeding {ctx.emails:,} users")
    category = Category.objects.create(key="bench-inapp", name="In-app")
    seed_users("inapp", ctx.emails, {GROUP: ctx.emails})
    Rule.objects.create(
        name="bench in-app",
        event_type=EVENT_TYPE,
        recipients=[f"group:{GROUP}"],
        category=category,
        channels=["inapp"],
        message="order_shipped",
    )
    rule_index.clear()
    return {}


def messages_of(event: Event) -> list[OutgoingMessage]:
    rows = Notification.objects.filter(event=event).order_by("pk").values_list("pk", "user_id")
    return [
        OutgoingMessage(
            delivery_id=0,
            channel="inapp",
            to="",
            subject=f"Your order B-{pk} has shipped",
            text=f"Order B-{pk} is on its way; it should arrive within three days.",
            extra={
                "notification_id": pk,
                "user_id": user_id,
                "url": f"https://shop.example.com/orders/B-{pk}",
            },
        )
        for pk, user_id in rows
    ]


def store_one_by_one(message: OutgoingMessage) -> None:
    """How the in-app channel wrote an item before bulk writes: one ORM
    ``UPDATE`` (and its commit) per item."""
    Notification.objects.filter(pk=message.extra["notification_id"]).update(
        title=message.subject[:500],
        body=message.text,
        url=(message.extra.get("url") or "")[:1000],
        inbox_at=timezone.now(),
    )


def clear_inbox(event: Event) -> None:
    Notification.objects.filter(event=event).update(inbox_at=None, title="", body="", url="")


def run(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    event = Event.objects.create(type=EVENT_TYPE, payload={"order_id": "B-1"})
    process_event(event.pk)
    messages = messages_of(event)
    items = len(messages)
    ctx.say(f"inapp run {ctx.run_number}: {items:,} items per item, in bulk, through the worker")
    with Stopwatch() as single, count_queries() as single_queries:
        for message in messages:
            store_one_by_one(message)
    clear_inbox(event)
    with Stopwatch() as bulk, count_queries() as bulk_queries:
        for start in range(0, items, BATCH):
            store_inapp_messages(messages[start : start + BATCH])
    written = Notification.objects.filter(event=event, inbox_at__isnull=False).count()
    clear_inbox(event)
    with Stopwatch() as worker:
        run_until_idle()
    delivered = Notification.objects.filter(event=event, inbox_at__isnull=False).count()
    figures = {
        "items": items,
        "written_in_bulk": written,
        "written_by_worker": delivered,
        "per_item": {
            "seconds": single.seconds,
            "ms_per_item": 1000 * single.seconds / items,
            "queries": single_queries.count,
        },
        "bulk": {
            "seconds": bulk.seconds,
            "ms_per_item": 1000 * bulk.seconds / items,
            "queries": bulk_queries.count,
        },
        "worker": {"seconds": worker.seconds, "ms_per_item": 1000 * worker.seconds / items},
        "speedup": single.seconds / bulk.seconds,
    }
    ctx.say(
        f"inapp run {ctx.run_number}: {figures['per_item']['ms_per_item']:.3f} ms per item "
        f"one by one, {figures['bulk']['ms_per_item']:.3f} ms in bulk, "
        f"{figures['worker']['ms_per_item']:.3f} ms through the worker"
    )
    return figures


register(
    Workload(
        name="inapp",
        title="In-app items: inbox writes per item and in bulk (batches of 50)",
        setup=setup,
        run=run,
        figures=(
            Figure("items", "items"),
            Figure("bulk: ms per item", "bulk.ms_per_item", "ms", baseline="per_item.ms_per_item"),
            Figure("bulk: statements", "bulk.queries", baseline="per_item.queries"),
            Figure("per item / bulk time", "speedup", "x"),
            Figure("worker path: ms per item", "worker.ms_per_item", "ms"),
        ),
    )
)
