"""The fan-out tables' references without database constraints (issue 14).

A notification's event, rule and category, and a delivery's notification, have
no foreign-key constraint in the database (their per-row checks were a quarter
of PostgreSQL's fan-out time). What the constraints guaranteed still holds:
fan-out checks the three parents once per chunk and writes nothing for one
that is gone, and deletes cascade (or protect, or set null) through the ORM."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, connection
from django.db.models import ProtectedError

from notify.models import Delivery, DeliveryAttempt, Event, Notification
from notify.models.status import Status
from notify.outbox.rows import PlannedDelivery, PlannedNotification, write_fanout_chunk

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BOTH = (PlannedDelivery("email", Status.PENDING), PlannedDelivery("inapp", Status.SKIPPED, "off"))


@pytest.fixture
def users(make_user):
    return [make_user().pk for _ in range(6)]


def fan_out(event, rule, category, users) -> tuple[int, int]:
    planned = [PlannedNotification(u, BOTH) for u in users]
    return write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)


def new_event() -> Event:
    return Event.objects.create(type="order.shipped", payload={})


def test_deleting_an_event_deletes_its_notifications_deliveries_and_attempts(
    users, make_rule, category
):
    rule = make_rule()
    gone, kept = new_event(), new_event()
    fan_out(gone, rule, category, users)
    fan_out(kept, rule, category, users)
    delivery = Delivery.objects.filter(notification__event=gone).first()
    DeliveryAttempt.objects.create(
        delivery=delivery, number=1, started_at=NOW, finished_at=NOW, outcome="sent"
    )

    gone.delete()

    assert not Notification.objects.filter(event_id=gone.pk).exists()
    assert not Delivery.objects.filter(notification__event_id=gone.pk).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id=delivery.pk).exists()
    # No orphans anywhere, and the other event's rows are all there.
    assert Delivery.objects.exclude(notification__in=Notification.objects.all()).count() == 0
    assert Notification.objects.filter(event=kept).count() == 6
    assert Delivery.objects.filter(notification__event=kept).count() == 12


def test_deleting_a_notification_or_a_user_deletes_their_deliveries(
    users, make_rule, category, django_user_model
):
    event = new_event()
    fan_out(event, make_rule(), category, users)
    notification = Notification.objects.filter(event=event).first()

    notification.delete()
    django_user_model.objects.filter(pk=users[1]).delete()

    assert not Delivery.objects.filter(notification_id=notification.pk).exists()
    assert not Notification.objects.filter(user_id=users[1]).exists()
    assert Delivery.objects.filter(notification__event=event).count() == 8
    assert Delivery.objects.count() == 8  # no delivery left without its notification


def test_a_category_in_use_is_protected_and_a_deleted_rule_is_set_null(users, make_rule, category):
    rule = make_rule()
    event = new_event()
    fan_out(event, rule, category, users)

    with pytest.raises(ProtectedError):
        category.delete()
    rule.delete()

    assert Notification.objects.filter(event=event, rule__isnull=True).count() == 6
    assert Notification.objects.filter(event=event, category=category).count() == 6


@pytest.mark.parametrize("gone", ["event", "rule", "category"])
def test_a_chunk_whose_event_rule_or_category_is_gone_writes_nothing(
    gone, users, make_rule, category
):
    rule = make_rule()
    event = new_event()
    fan_out(event, rule, category, users[:2])
    missing = {"event": event, "rule": rule, "category": category}
    ids = {name: row.pk for name, row in missing.items()}
    ids[gone] = type(missing[gone]).objects.order_by("-pk").values_list("pk", flat=True)[0] + 1
    planned = [PlannedNotification(u, BOTH) for u in users]

    with pytest.raises(IntegrityError, match="no longer exists"):
        write_fanout_chunk(ids["event"], ids["rule"], ids["category"], planned, NOW)

    # Nothing of the failed chunk was written; the earlier chunk is intact.
    assert Notification.objects.count() == 2
    assert Delivery.objects.count() == 4


def test_only_the_user_reference_keeps_a_database_constraint(db):
    """The decision, as the schema says it: the per-recipient user reference
    keeps its constraint (every row names another user); the per-chunk
    parents and the delivery's notification have none."""

    def referenced(model) -> set[str]:
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
        return {c["columns"][0] for c in constraints.values() if c["foreign_key"]}

    assert referenced(Notification) == {"user_id"}
    assert referenced(Delivery) == {"digest_id"}
