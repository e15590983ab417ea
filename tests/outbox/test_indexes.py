"""Every hot query is served by an index, on PostgreSQL, checked with EXPLAIN.

A realistic table (10,000 deliveries: most sent, a few due, claimed, held for
a digest; 10,000 inbox items, most read) is ANALYZEd, then the planner is asked
how it would run the queries the workers, the relay, the inbox and the digest
builder run. The queries are the real ones: captured from the functions
(``claim_due_deliveries``, ``unread_count``, ``inbox``) or built by the same
querysets (``notify.runtime.relay``). Then once more with ``enable_seqscan = off``,
which proves the index can serve the query at all, whatever the table's size.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify.inbox.store import inbox, unread_count
from notify.models import Category, Delivery, Event, Notification
from notify.models.status import Status
from notify.outbox.rows import claim_due_deliveries
from notify.outbox.status_reports import by_provider_id
from notify.runtime import relay
from rules.models import Rule
from tests.scaleout import seed_group

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USERS, PER_USER = 500, 20


@pytest.fixture
def table(db):
    if connection.vendor != "postgresql":
        pytest.skip("EXPLAIN plans are checked on PostgreSQL")
    now = timezone.now()
    category = Category.objects.create(key="orders", name="Orders")
    group = seed_group("crew", USERS)
    users = list(group.user_set.order_by("pk").values_list("pk", flat=True))
    rule = Rule.objects.create(
        name="crew", event_type="order.shipped", category=category, message="order_shipped"
    )
    events = Event.objects.bulk_create(
        [
            Event(type="order.shipped", status=Event.State.PROCESSED, received_at=now)
            for _ in range(PER_USER)
        ]
    )
    notifications = Notification.objects.bulk_create(
        [
            Notification(
                event=event,
                rule=rule,
                user_id=user,
                category=category,
                inbox_at=now,
                read_at=None if (i + j) % 5 == 0 else now,  # a fifth unread
            )
            for i, event in enumerate(events)
            for j, user in enumerate(users)
        ]
    )
    deliveries = []
    for n, notification in enumerate(notifications):
        status, due, claimed = Status.SENT, now - timedelta(days=1), None
        if n % 50 == 0:
            status, due = Status.PENDING, now - timedelta(seconds=30)  # due
        elif n % 50 == 1:
            status, due = Status.PENDING, now + timedelta(hours=1)  # a retry, later
        elif n % 100 == 2:
            status, claimed = Status.SENDING, now - timedelta(minutes=1)  # worker died
        elif n % 100 == 3:
            status = Status.DIGEST
        deliveries.append(
            Delivery(
                notification=notification,
                channel="email",
                status=status,
                next_attempt_at=due,
                claimed_until=claimed,
                updated_at=due,
            )
        )
    Delivery.objects.bulk_create(deliveries)
    # Events of the past, all fanned out, and a few waiting.
    Event.objects.bulk_create(
        [
            Event(
                type="order.shipped",
                status=Event.State.RECEIVED if n % 500 == 0 else Event.State.PROCESSED,
                received_at=now - timedelta(minutes=n),
            )
            for n in range(5000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"user": users[0], "now": now}


def plan_indexes(sql: str, params=(), seqscan: bool = True) -> tuple[set[str], str]:
    """Index names in the plan of ``sql``, and the plan as text (for messages)."""
    with connection.cursor() as cursor:
        if not seqscan:
            cursor.execute("SET LOCAL enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET enable_seqscan")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    names: set[str] = set()

    def walk(node: dict) -> None:
        if "Index Name" in node:
            names.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return names, json.dumps(plan, indent=1)


def captured(function) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        function()
    return [q["sql"] for q in queries.captured_queries]


def assert_served(sql: str, expected: set[str], params=()) -> None:
    """The plan reads through one of the ``expected`` indexes (a name ending in
    ``*`` is a prefix: Django names foreign key indexes with a hash)."""

    def expected_in(names: set[str]) -> bool:
        return any(
            name.startswith(e[:-1]) if e.endswith("*") else name == e
            for name in names
            for e in expected
        )

    for seqscan in (True, False):
        names, text = plan_indexes(sql, params, seqscan)
        assert expected_in(names), f"expected one of {expected} (seqscan={seqscan}):\n{text}"


def test_claiming_due_deliveries_uses_the_due_index(table):
    statements = captured(lambda: claim_due_deliveries(limit=50, ttl=60))
    select = next(s for s in statements if s.startswith("SELECT") and "FOR UPDATE" in s)
    assert "SKIP LOCKED" in select  # claims in batches never wait for each other
    assert_served(select, {"delivery_due_idx"})


def test_a_users_unread_inbox_uses_the_unread_index(table):
    [count] = captured(lambda: unread_count(table["user"]))
    assert_served(count, {"inbox_unread_idx"})
    [page] = captured(lambda: list(inbox(table["user"])[:20]))
    # Twenty items a user: the planner may prefer the user foreign key's index.
    assert_served(page, {"inbox_idx", "notify_notification_user_id_*"})


def test_pending_digest_items_use_the_digest_index(table):
    pending = Delivery.objects.filter(status=Status.DIGEST, digest__isnull=True)
    sql, params = pending.values_list("pk", "channel").query.sql_with_params()
    assert_served(sql, {"delivery_digest_pending_idx"}, params)


def test_the_relay_queries_use_indexes(table):
    now, grace = table["now"], 15.0
    for queryset, expected in (
        (relay.unhanded_deliveries(now, grace, 60.0), {"delivery_due_idx"}),
        (relay.lost_deliveries(now), {"delivery_due_idx", "delivery_stats_idx"}),
        (relay.waiting_events(now, grace), {"event_status_idx"}),
    ):
        sql, params = queryset.values_list("pk", flat=True).query.sql_with_params()
        assert_served(sql, expected, params)


def test_reports_find_deliveries_by_provider_id_through_the_partial_index(table):
    """Fan-out's rows have no provider id and are not in the index; sent ones are."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Delivery._meta.db_table} SET provider_message_id = 'msg-' || id "
            "WHERE status = 'sent'"
        )
        cursor.execute("ANALYZE")
    for ids in (("msg-7",), ("msg-7", "msg-8")):
        queryset = Delivery.objects.filter(by_provider_id(*ids)).values_list("pk", flat=True)
        sql, params = queryset.query.sql_with_params()
        assert_served(sql, {"delivery_provider_id_idx"}, params)


def test_a_digests_items_use_the_partial_digest_index(table):
    sql, params = Delivery.objects.filter(digest_id=1).values_list("pk").query.sql_with_params()
    assert_served(sql, {"delivery_digest_idx"}, params)
