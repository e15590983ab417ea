"""A claimed batch loads as the ORM would load it (``notify.delivery.claimed``).

``load_claimed`` writes its own statement instead of compiling a
``select_related`` queryset per batch; the instances it makes must be the
ORM's: the same field values (converted: datetimes, booleans, JSON), the same
relations cached (an event without an actor, a notification whose rule was
deleted: ``None``, with no query to find out), only rows still claimed with
the token, in send order.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify import trigger
from notify.delivery.claimed import RELATED, load_claimed
from notify.fanout.pipeline import process_event
from notify.models import Delivery, Notification
from notify.models.status import Status
from notify.outbox.rows import SEND_ORDER, claim_due_deliveries


def values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


def snapshot(delivery: Delivery) -> tuple:
    n = delivery.notification
    event = n.event
    return (
        values(delivery),
        values(n),
        values(event),
        event.actor and values(event.actor),
        n.rule and values(n.rule),
        values(n.user),
        values(n.category),
    )


@pytest.fixture
def claimed(db, make_user, make_rule):
    """A claimed batch over two channels: one event with an actor, one
    without, and one notification whose rule was deleted."""
    actor = make_user("actor", first_name="Ada")
    users = [make_user(f"reader{i}", first_name=f"R{i}") for i in range(3)]
    rule = make_rule(channels=["email", "inapp"])
    with_actor = trigger(
        "order.shipped", {"order_id": "A1", "total": 3.5}, recipients=users, actor=actor
    )
    without = trigger("order.shipped", {"order_id": "B2"}, recipients=users[:1])
    for event in (with_actor, without):
        assert process_event(event.pk) is not None
    orphan = Notification.objects.filter(event=without).get()
    Notification.objects.filter(pk=orphan.pk).update(rule=None)
    del rule
    Delivery.objects.filter(status=Status.PENDING).update(next_attempt_at=timezone.now())
    ids, token = claim_due_deliveries(limit=50, ttl=60)
    assert len(ids) == 8
    return ids, token


def test_the_batch_loads_as_select_related_would(claimed):
    ids, token = claimed
    orm = list(
        Delivery.objects.filter(pk__in=ids, status=Status.SENDING, claimed_until=token)
        .select_related(*RELATED)
        .order_by(*SEND_ORDER)
    )

    loaded = load_claimed(ids, token)

    assert [snapshot(d) for d in loaded] == [snapshot(d) for d in orm]
    assert [d.pk for d in loaded] == [d.pk for d in orm]
    assert any(d.notification.event.actor is None for d in loaded)
    assert any(d.notification.event.actor is not None for d in loaded)
    assert any(d.notification.rule is None for d in loaded)
    assert isinstance(loaded[0].notification.event.payload, dict)
    assert loaded[0].notification.user.is_active is True
    assert timezone.is_aware(loaded[0].notification.event.received_at)


def test_the_relations_are_loaded_with_the_batch(claimed):
    ids, token = claimed
    with CaptureQueriesContext(connection) as queries:
        loaded = load_claimed(ids, token)
        for d in loaded:
            n = d.notification
            (n.event.actor, n.rule, n.user.get_full_name(), n.category.key)
    assert len(queries) == 1


def test_only_rows_still_claimed_with_the_token_load(claimed):
    ids, token = claimed
    Delivery.objects.filter(pk=ids[0]).update(claimed_until=None, status=Status.PENDING)
    assert ids[0] not in {d.pk for d in load_claimed(ids, token)}
    assert load_claimed(ids, timezone.now()) == []
    assert load_claimed([], token) == []
