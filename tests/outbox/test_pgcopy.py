"""Binary ``COPY`` for fan-out chunks on PostgreSQL (``notify.outbox.pgcopy``):
the same rows as the ``INSERT`` statement, and nothing written twice when a
chunk meets rows of its own (a retry, a concurrent fan-out of the same event)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from notify.models import Delivery, Event, Notification
from notify.models.status import Status
from notify.outbox import pgcopy, rows
from notify.outbox.rows import PlannedDelivery, PlannedNotification, write_fanout_chunk

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("binary COPY is PostgreSQL's")


@pytest.fixture
def users(make_user):
    return [make_user().pk for _ in range(130)]


def planned_for(user_ids: list[int]) -> list[PlannedNotification]:
    """Shared and unshared plans, a due time of each user's own, every status."""
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
                PlannedDelivery("email", Status.PENDING, "", "quiet_hours", NOW + timedelta(i)),
                PlannedDelivery("inapp", Status.PENDING, "", "délai ✓"),
            )
        planned.append(PlannedNotification(user_id, deliveries))
    return planned


NOTIFICATION = ("user_id", "rule_id", "category_id", "created_at", "group_key", "title", "actions")
DELIVERY = [
    f.attname for f in Delivery._meta.concrete_fields if f.attname not in {"id", "notification_id"}
]


def rows_of(event: Event) -> tuple[list, list]:
    """Every column fan-out writes or leaves to its default, in id order;
    the deliveries' notifications by the position of their id."""
    notifications = list(
        Notification.objects.filter(event=event).order_by("pk").values_list("pk", *NOTIFICATION)
    )
    position = {row[0]: i for i, row in enumerate(notifications)}
    deliveries = [
        (position[row[0]], *row[1:])
        for row in Delivery.objects.filter(notification__event=event)
        .order_by("pk")
        .values_list("notification_id", *DELIVERY)
    ]
    return [row[1:] for row in notifications], deliveries


def new_event() -> Event:
    return Event.objects.create(type="order.shipped", payload={})


def test_copy_writes_the_same_rows_as_the_insert(users, make_rule, category):
    rule = make_rule()
    planned = planned_for(users)
    by_copy, by_insert = new_event(), new_event()

    with CaptureQueriesContext(connection) as queries:
        counts = write_fanout_chunk(by_copy.pk, rule.pk, category.pk, planned, NOW, "g:1")
    shapes, shape_of = rows.delivery_shapes(planned)
    args = (by_insert.pk, rule.pk, category.pk, NOW, "g:1")
    with transaction.atomic(), connection.cursor() as cursor:
        assert rows._write_chunk_postgres(cursor, args, planned, shapes, shape_of) == 130

    assert counts == (130, 260)
    assert not any("INSERT" in q["sql"] for q in queries.captured_queries)  # COPY wrote them
    assert rows_of(by_copy) == rows_of(by_insert)
    assert len(rows_of(by_copy)[1]) == 260


def test_a_chunk_under_the_threshold_takes_the_insert(users, make_rule, category):
    rule = make_rule()
    event = new_event()
    planned = planned_for(users[: pgcopy.COPY_MIN_RECIPIENTS - 1])

    with CaptureQueriesContext(connection) as queries:
        counts = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)

    assert counts == (99, 198)
    assert any("INSERT" in q["sql"] for q in queries.captured_queries)


def test_a_duplicate_chunk_falls_back_and_writes_nothing_twice(users, make_rule, category):
    rule = make_rule()
    event = new_event()
    planned = planned_for(users)
    write_fanout_chunk(event.pk, rule.pk, category.pk, planned[:110], NOW)  # by COPY
    first = rows_of(event)
    sent = list(
        Delivery.objects.filter(notification__event=event).order_by("pk").values_list("pk")[:5]
    )
    Delivery.objects.filter(pk__in=[pk for (pk,) in sent]).update(status=Status.SENT)

    # The retry of the whole chunk: COPY meets the first 110, the INSERT writes the rest.
    with CaptureQueriesContext(connection) as queries:
        counts = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)

    assert counts == (130, 260)
    assert any("ON CONFLICT" in q["sql"] for q in queries.captured_queries)
    notifications, deliveries = rows_of(event)
    assert notifications[:110] == first[0]
    assert len(notifications) == 130 and len(deliveries) == 260
    assert Delivery.objects.filter(pk__in=[pk for (pk,) in sent], status=Status.SENT).count() == 5
    # The connection is usable after the rolled-back COPY, in and out of a transaction.
    assert Notification.objects.filter(event=event).count() == 130


def test_a_missing_parent_writes_nothing(users, make_rule, category):
    rule = make_rule()
    event = new_event()
    gone = event.pk
    event.delete()
    with pytest.raises(Exception, match="no longer exists"):
        write_fanout_chunk(gone, rule.pk, category.pk, planned_for(users), NOW)
    assert not Notification.objects.filter(event_id=gone).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_fan_outs_of_the_same_event_write_each_row_once(make_user, make_rule, category):
    """The second COPY waits on the first's unique keys, fails when it commits,
    and falls back to the INSERT, which finds every row written."""
    users = [make_user().pk for _ in range(130)]
    rule = make_rule()
    event = new_event()
    planned = planned_for(users)
    first_wrote = threading.Event()
    second_started = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                results["first"] = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)
                first_wrote.set()
                second_started.wait(10)
                wait_for_a_lock_waiter()
        except Exception as exc:  # reported below
            results["first"] = exc
        finally:
            first_wrote.set()
            connections.close_all()

    def second() -> None:
        try:
            first_wrote.wait(10)
            second_started.set()
            results["second"] = write_fanout_chunk(event.pk, rule.pk, category.pk, planned, NOW)
        except Exception as exc:
            results["second"] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert results == {"first": (130, 260), "second": (130, 260)}
    notifications, deliveries = rows_of(event)
    assert len(notifications) == 130
    assert len(deliveries) == 260
    assert len({(n[0]) for n in notifications}) == 130


def wait_for_a_lock_waiter(timeout: float = 10) -> None:
    """Until another session waits on a lock (the second COPY on our keys)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the second fan-out never waited on the first")
