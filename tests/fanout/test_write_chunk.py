"""``write_fanout_chunk`` writes each recipient's planned deliveries exactly,
though it sends the database only the chunk's distinct plans ("shapes") and
which recipient has which: many shapes (more than one SQLite statement
takes), shared and unshared tuples, a retried chunk, and the query count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notify.models import Delivery, Event, Notification
from notify.models.status import Status
from notify.outbox import rows
from notify.outbox.rows import PlannedDelivery, PlannedNotification, write_fanout_chunk

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def users(make_user):
    return [make_user().pk for _ in range(120)]


def planned_for(user_ids: list[int]) -> list[PlannedNotification]:
    """A mix: a shared plan (the same tuple), equal plans in distinct tuples,
    and one plan of its own per user for a third of them (each due at its own
    time, as quiet hours make it): far more shapes than one statement takes."""
    shared = (PlannedDelivery("email", Status.PENDING), PlannedDelivery("inapp", Status.PENDING))
    planned = []
    for i, user_id in enumerate(user_ids):
        if i % 3 == 0:
            deliveries = shared
        elif i % 3 == 1:
            deliveries = (
                PlannedDelivery("email", Status.SKIPPED, "no_address"),
                PlannedDelivery("inapp", Status.DIGEST, "daily"),
            )
        else:
            deliveries = (
                PlannedDelivery(
                    "email", Status.PENDING, "", "quiet_hours", NOW + timedelta(minutes=i)
                ),
                PlannedDelivery("inapp", Status.PENDING),
            )
        planned.append(PlannedNotification(user_id, deliveries))
    return planned


def written(event: Event) -> dict[tuple[int, str], tuple]:
    return {
        (user_id, channel): (status, skip, hold, due)
        for user_id, channel, status, skip, hold, due in Delivery.objects.filter(
            notification__event=event
        ).values_list(
            "notification__user_id",
            "channel",
            "status",
            "skip_reason",
            "hold_reason",
            "next_attempt_at",
        )
    }


def expected(planned: list[PlannedNotification]) -> dict[tuple[int, str], tuple]:
    return {
        (p.user_id, d.channel): (d.status, d.skip_reason, d.hold_reason, d.due_at or NOW)
        for p in planned
        for d in p.deliveries
    }


def test_every_recipient_gets_exactly_its_planned_deliveries(users, make_rule, category):
    rule = make_rule()
    event = Event.objects.create(type="order.shipped", payload={})
    planned = planned_for(users)
    shapes, _ = rows.delivery_shapes(planned)
    assert len(shapes) > rows.SQLITE_SHAPES_PER_STATEMENT  # more than one statement's worth

    counts = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW, group_key="g")

    assert counts == (120, 240)
    assert written(event) == expected(planned)
    assert set(Notification.objects.filter(event=event).values_list("user_id", "group_key")) == {
        (u, "g") for u in users
    }


def test_shapes_are_grouped_by_identity_then_by_value():
    planned = planned_for(list(range(1, 31)))
    shapes, shape_of = rows.delivery_shapes(planned)
    # One shared tuple, one plan equal by value in ten tuples, ten plans of their own.
    assert len(shapes) == 1 + 1 + 10
    assert [shapes[k] for k in shape_of] == [p.deliveries for p in planned]


def test_a_retried_chunk_writes_nothing_twice_and_keeps_what_was_sent(users, make_rule, category):
    rule = make_rule()
    event = Event.objects.create(type="order.shipped", payload={})
    planned = planned_for(users)
    write_fanout_chunk(event.pk, rule.pk, category.pk, planned[:40], NOW)
    first = set(Delivery.objects.filter(notification__event=event).values_list("pk", flat=True))
    sent = Delivery.objects.filter(pk__in=sorted(first)[:5])
    sent.update(status=Status.SENT)

    # The crash came mid-event: the retry writes the whole chunk again.
    counts = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)

    assert counts == (120, 240)
    assert Delivery.objects.filter(notification__event=event).count() == 240
    assert Delivery.objects.filter(pk__in=sorted(first)[:5], status=Status.SENT).count() == 5
    now_written = written(event)
    for key, value in expected(planned).items():
        if key[0] not in {d.notification.user_id for d in sent}:
            assert now_written[key] == value


def test_a_chunk_is_a_fixed_number_of_statements(users, make_rule, category):
    rule = make_rule()
    event = Event.objects.create(type="order.shipped", payload={})
    shared = (PlannedDelivery("email", Status.PENDING), PlannedDelivery("inapp", Status.PENDING))
    planned = [PlannedNotification(u, shared) for u in users]

    with CaptureQueriesContext(connection) as queries:
        write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)

    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "BEGIN"))
    ]
    assert len(statements) == (1 if connection.vendor == "postgresql" else 2)
    # Deliveries go in recipient by recipient, in the plan's channel order.
    ordered = list(
        Delivery.objects.filter(notification__event=event)
        .order_by("pk")
        .values_list("notification__user_id", "channel")
    )
    assert ordered == [(p.user_id, d.channel) for p in planned for d in p.deliveries]
