"""In-app items are written in bulk: a worker's batch of inbox items is one
``UPDATE`` (not one per item), each user's live feed is woken after the
commit, and a batch that cannot be written is retried, never recorded sent."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels.base import OutgoingMessage
from notify import trigger
from notify.delivery.send import deliver
from notify.fanout.pipeline import process_event
from notify.inbox import live
from notify.inbox.store import inbox, store_inapp_messages, unread_count
from notify.models import Delivery, DeliveryAttempt, Notification
from notify.models.status import Status
from notify.outbox.rows import claim_due_deliveries

INAPP_ONLY = {"inapp": {"BACKEND": "channels.inapp.InAppChannel", "OPTIONS": {}}}


def broken_store(messages):
    raise RuntimeError("disk full")


def inbox_updates(queries) -> list[str]:
    table = Notification._meta.db_table
    return [q["sql"] for q in queries if q["sql"].lstrip().startswith("WITH") and table in q["sql"]]


@pytest.fixture
def fanned_out(make_rule, make_user, settings):
    settings.NOTIFY = {**settings.NOTIFY, "CHANNELS": INAPP_ONLY, "DEFAULT_CHANNELS": ["inapp"]}
    make_rule(channels=["inapp"])
    users = [make_user(f"reader{i}") for i in range(30)]
    event = trigger("order.shipped", {"order_id": "A1"}, recipients=[u.pk for u in users])
    assert process_event(event.pk) is not None
    return users


def test_a_batch_of_inbox_items_is_one_statement(fanned_out):
    ids, token = claim_due_deliveries(limit=100, ttl=60)
    assert len(ids) == 30
    with CaptureQueriesContext(connection) as queries:
        stats = deliver(ids, token)
    assert stats.sent == 30
    assert len(inbox_updates(queries.captured_queries)) == 1
    for user in fanned_out:
        [item] = inbox(user.pk)
        assert item.title and item.body and item.inbox_at is not None
        assert unread_count(user.pk) == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.SENT}


def test_each_user_is_woken_once_after_the_commit(
    fanned_out, monkeypatch, django_capture_on_commit_callbacks
):
    woken: list[int] = []
    monkeypatch.setattr(live.notifier, "publish", woken.append)
    notifications = list(Notification.objects.order_by("pk"))
    messages = [
        OutgoingMessage(
            delivery_id=0,
            channel="inapp",
            to="",
            subject=f"item {n.pk}",
            text="body",
            extra={"notification_id": n.pk, "user_id": n.user_id},
        )
        for n in notifications
    ]
    with django_capture_on_commit_callbacks(execute=True):
        assert store_inapp_messages(messages) == len(messages)
    assert sorted(woken) == sorted(n.user_id for n in notifications)  # once each
    assert Notification.objects.get(pk=notifications[5].pk).title == f"item {notifications[5].pk}"


def test_a_batch_that_cannot_be_written_is_retried_not_recorded_sent(fanned_out, settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            "inapp": {
                "BACKEND": "channels.inapp.InAppChannel",
                "OPTIONS": {"STORE_MANY": "tests.delivery.test_inapp_batch.broken_store"},
            }
        },
    }
    ids, token = claim_due_deliveries(limit=100, ttl=60)
    stats = deliver(ids, token)
    assert stats.sent == 0 and stats.retried == 30
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.PENDING}
    attempts = DeliveryAttempt.objects.all()
    assert attempts.count() == 30
    assert {a.outcome for a in attempts} == {DeliveryAttempt.Outcome.TRANSIENT}
    assert "disk full" in attempts[0].error_message
    assert Notification.objects.filter(inbox_at__isnull=False).count() == 0
