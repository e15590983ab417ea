"""Celery tasks: ids in, the same library functions the in-process pool runs.

Thin on purpose (as Zulip's queue workers): each task claims in the database
what its message names and is still due, then calls the function a scheduler
job, the worker pool and a test would call. A message delivered twice (a
redelivery after a lost worker, a relay of a slow hand-off) finds nothing left
to claim and does nothing.

``notify.fan_out(event_ids)``
    claim the events (``claim_events(ids=...)``), fan each out
    (``process_event``), hand off the deliveries it wrote that are due now or
    within ``BROKER_MAX_COUNTDOWN`` seconds.
``notify.advance_runs()``
    claim a batch of due workflow runs, advance them, hand off the deliveries
    their channel steps wrote (published by the scheduler per batch of due runs).
``notify.deliver(delivery_ids)``
    claim those still due with a fresh token (``claim_due_deliveries(ids=...)``;
    a suspect alone, then the others), ``deliver`` them, hand off the retries due within ``BROKER_MAX_COUNTDOWN``;
    later ones are the relay's (``notify.runtime.relay``), never a long ETA in the broker.

A database error (a restart) retries the task with backoff; whatever it had
claimed meanwhile is taken again once the claim expires.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from notify import conf
from notify.celery import app
from notify.delivery.send import deliver
from notify.fanout.pipeline import process_event
from notify.models import Delivery, WorkflowRun
from notify.models.status import Status
from notify.outbox.rows import claim_due_deliveries, claim_events
from notify.runtime.handoff import BrokerUnavailable, get_dispatcher
from notify.workflows.runner import advance_due_runs

log = logging.getLogger("notify.runtime.tasks")

# The database went away (restart, failover): try again shortly.
DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY = {
    "autoretry_for": DATABASE_DOWN,
    "retry_backoff": 1,
    "retry_backoff_max": 30,  # below BROKER_MAX_COUNTDOWN: see notify.celery
    "retry_jitter": True,
    "max_retries": 8,
}


@app.task(name="notify.fan_out", **RETRY)
def fan_out_events(event_ids: list[int]) -> int:
    """Fan out the named events that are still waiting; return how many."""
    claimed = claim_events(limit=len(event_ids), ttl=conf.get("CLAIM_TTL"), ids=event_ids)
    for event_id in claimed:
        process_event(event_id)
        hand_off_rows(
            Delivery.objects.filter(notification__event_id=event_id, status=Status.PENDING)
        )
    return len(claimed)


@app.task(name="notify.deliver", **RETRY)
def deliver_deliveries(delivery_ids: list[int]) -> int:
    """Claim and send the named deliveries that are still due; return how many were sent.

    A suspect among them is claimed (and sent) alone, then the others."""
    remaining = list(delivery_ids)
    sent = 0
    while remaining:
        ids, token = claim_due_deliveries(
            limit=len(remaining), ttl=conf.get("CLAIM_TTL"), ids=remaining
        )
        if not ids:
            break
        stats = deliver(ids, token)
        sent += stats.sent
        if stats.retried or stats.held or stats.released:
            hand_off_rows(Delivery.objects.filter(pk__in=ids, status=Status.PENDING))
        taken = set(ids)
        remaining = [pk for pk in remaining if pk not in taken]
    return sent


@app.task(name="notify.advance_runs", **RETRY)
def advance_runs() -> int:
    """Claim and advance a batch of due workflow runs (``notify.workflows.runner``)
    and hand off the deliveries their channel steps wrote; return the runs advanced."""
    stats = advance_due_runs()
    if stats.notifications:
        hand_off_rows(
            Delivery.objects.filter(notification_id__in=stats.notifications, status=Status.PENDING)
        )
    return stats.runs


def publish_run_advances(now: datetime | None = None) -> int:
    """With a broker: one ``notify.advance_runs`` message per batch of due runs
    (the scheduler's tick wakes them; the runs table says what is due)."""
    now = now or timezone.now()
    due = WorkflowRun.objects.filter(
        Q(state=WorkflowRun.State.WAITING, due_at__lte=now)
        | Q(state=WorkflowRun.State.RUNNING, claimed_until__lt=now)
    ).count()
    messages = math.ceil(due / conf.get("WORKFLOW_BATCH_SIZE"))
    for _ in range(messages):
        advance_runs.delay()
    return messages


def hand_off_rows(pending, now: datetime | None = None) -> int:
    """Hand off the pending deliveries of ``pending`` (a queryset) that are due
    within ``BROKER_MAX_COUNTDOWN``: due ones at once, the others with a
    countdown of whole seconds (one message per batch due together). Returns
    how many ids were published; the relay takes what could not be."""
    now = now or timezone.now()
    horizon = now + timedelta(seconds=conf.get("BROKER_MAX_COUNTDOWN"))
    rows = (
        pending.filter(next_attempt_at__lte=horizon)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", "next_attempt_at")
    )
    return publish_due(rows.iterator(chunk_size=2000), now)


def publish_due(rows: Iterable[tuple[int, datetime]], now: datetime) -> int:
    """Publish ``(id, due)`` rows in batches of ids due within the same quarter
    second; each batch's countdown is its bucket's end, so none arrives early."""
    dispatcher = get_dispatcher()
    size = conf.get("WORKER_BATCH_SIZE")
    buckets: dict[float, list[int]] = {}
    published = 0
    try:
        for pk, due in rows:
            seconds = max(0.0, math.ceil((due - now).total_seconds() * 4) / 4)
            bucket = buckets.setdefault(seconds, [])
            bucket.append(pk)
            if len(bucket) >= size:
                published += dispatcher.hand_off_deliveries(bucket, countdown=seconds)
                buckets[seconds] = []
        for seconds, bucket in buckets.items():
            published += dispatcher.hand_off_deliveries(bucket, countdown=seconds)
    except BrokerUnavailable:
        pass  # logged by the dispatcher; the rows stay pending for the relay
    return published
