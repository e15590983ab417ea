"""Digests are built in bulk: the waiting items of many users in one query,
a batch of rows in one insert and their items claimed in one statement, so the
statements of a build do not grow with the number of digests; a period built
meanwhile by another tick leaves the rest of the batch built."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notify import trigger
from notify.fanout.pipeline import process_event
from notify.models import CategoryPreference, Delivery, Digest, UserSettings
from notify.models.status import Status
from notify.scheduling.digests.build import (
    PlannedDigest,
    build_due_digests,
    create_and_claim_many,
    planned_digests,
)
from notify.scheduling.digests.periods import latest_due

DAY_BEFORE, TICK = datetime(2026, 11, 20, 12, tzinfo=UTC), datetime(2026, 11, 21, 9, tzinfo=UTC)


@pytest.fixture
def waiting(make_user, make_rule, category):
    """``n`` users on a daily digest at 8 UTC, each with two items waiting since the day before."""
    make_rule(name="shipped", channels=["email"])

    def make(n: int, prefix: str) -> list[int]:
        users = [make_user(f"{prefix}{i}") for i in range(n)]
        for user in users:
            UserSettings.objects.create(user=user, timezone="UTC", digest_hour=8)
            CategoryPreference.objects.create(user=user, category=category, mode="daily")
        with time_machine.travel(DAY_BEFORE, tick=False):
            for order in ("A1", "A2"):
                event = trigger(
                    "order.shipped", {"order_id": order}, recipients=[u.pk for u in users]
                )
                process_event(event.pk)
        return [u.pk for u in users]

    return make


def build_statements(now) -> tuple[tuple[int, int], int]:
    with CaptureQueriesContext(connection) as queries:
        result = build_due_digests(now)
    return result, len(queries.captured_queries)


def test_the_statements_of_a_build_do_not_grow_with_the_digests(waiting):
    waiting(3, "few")
    few, few_statements = build_statements(TICK)
    assert few == (3, 6)
    Digest.objects.all().delete()
    Delivery.objects.update(digest=None, status=Status.DIGEST)
    waiting(40, "many")
    many, many_statements = build_statements(TICK)
    assert many == (43, 86)
    assert many_statements == few_statements
    for digest in Digest.objects.all():
        assert digest.items.count() == digest.item_count == 2
        assert {i.notification.user_id for i in digest.items.all()} == {digest.user_id}


def test_a_period_built_meanwhile_leaves_the_rest_of_the_batch_built(waiting):
    users = waiting(3, "race")
    period = latest_due(TICK, "daily", "UTC", 8)
    items = list(
        Delivery.objects.filter(status=Status.DIGEST)
        .order_by("pk")
        .values_list("pk", "notification__user_id", "channel", "skip_reason", "updated_at")
    )
    planned = planned_digests({(u, "email", "daily"): period for u in users}, items)
    assert [len(p.item_ids) for p in planned] == [2, 2, 2]
    # Another scheduler built the first user's period (and claimed its items) first.
    assert create_and_claim_many(planned[:1], TICK) == (1, 2)
    assert create_and_claim_many(planned, TICK) == (2, 4)
    assert Digest.objects.count() == 3
    assert Delivery.objects.filter(digest__isnull=True).count() == 0


def test_a_digest_whose_items_were_taken_meanwhile_is_not_kept(waiting):
    [user] = waiting(1, "gone")
    period = latest_due(TICK, "daily", "UTC", 8)
    ids = list(Delivery.objects.values_list("pk", flat=True))
    Delivery.objects.update(status=Status.SKIPPED)  # decided out meanwhile
    assert create_and_claim_many([PlannedDigest(user, "email", period, ids)], TICK) == (0, 0)
    assert Digest.objects.count() == 0
