"""Attempt rows written in one statement (a few) or one ``executemany``
(many, ``ONE_STATEMENT_ROWS``): the same rows either way, read back through
the ORM as they were given."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notify import trigger
from notify.fanout.pipeline import process_event
from notify.models import Delivery, DeliveryAttempt
from notify.outbox.rows import ONE_STATEMENT_ROWS, claim_events, insert_attempts


@pytest.fixture
def deliveries(make_rule, make_user):
    make_rule(channels=["inapp"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=[make_user() for _ in range(3)])
    for event_id in claim_events(limit=10, ttl=60):
        process_event(event_id)
    return list(Delivery.objects.order_by("pk"))


@pytest.mark.parametrize("count", [1, ONE_STATEMENT_ROWS, ONE_STATEMENT_ROWS + 1, 40])
def test_the_rows_read_back_as_given(deliveries, count):
    now = timezone.now()
    given = [
        DeliveryAttempt(
            delivery_id=deliveries[n % len(deliveries)].pk,
            number=n + 1,
            started_at=now,
            finished_at=now,
            provider="smtp",
            outcome="sent" if n % 2 else "failed",
            error_code="" if n % 2 else "421",
            error_message="" if n % 2 else "try later, 'quoted' and ünïcode",
            retry_at=None if n % 2 else now,
            sent={"message_id": f"<{n}@example.com>", "to": ["a@example.com"]},
            response={"code": 250, "n": n},
        )
        for n in range(count)
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        insert_attempts(cursor, given)

    fields = ("delivery_id", "number", "started_at", "finished_at", "provider", "outcome")
    fields += ("error_code", "error_message", "retry_at", "sent", "response")
    stored = DeliveryAttempt.objects.order_by("number").values_list(*fields)
    assert list(stored) == [tuple(getattr(a, f) for f in fields) for a in given]


def test_no_rows_no_statement(db):
    with connection.cursor() as cursor:
        insert_attempts(cursor, [])
    assert not DeliveryAttempt.objects.exists()
