"""Events in from Python and from model signals."""

from __future__ import annotations

import datetime
import decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

import notify
from notify.fanout.payload import snapshot
from notify.models import Event


@pytest.mark.django_db
def test_trigger_stores_json_safe_payload_and_references():
    user = get_user_model().objects.create(username="ann", email="ann@example.com")
    event = notify.trigger(
        "invoice.paid",
        {"total": decimal.Decimal("12.50"), "at": datetime.date(2026, 1, 2)},
        actor=user,
        recipients=[user, 7, "x@example.com"],
    )
    event.refresh_from_db()
    assert event.payload == {"total": "12.50", "at": "2026-01-02"}
    assert event.actor_id == user.pk
    assert event.recipients == [user.pk, 7, "x@example.com"]
    assert event.status == Event.State.RECEIVED
    assert event.source == "python"


@pytest.mark.django_db
def test_idempotency_key_returns_the_first_event():
    first = notify.trigger("a.b", {"n": 1}, idempotency_key="k-1")
    again = notify.trigger("a.b", {"n": 1}, idempotency_key="k-1")
    assert again.pk == first.pk
    assert Event.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["Order Shipped", "", ".x", "x..y", "a" * 201, 5])
def test_bad_event_type_is_refused_and_nothing_stored(bad):
    with pytest.raises(ValidationError, match="event type"):
        notify.trigger(bad, {})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_payload_must_be_an_object():
    with pytest.raises(ValidationError, match="payload"):
        notify.trigger("a.b", [1, 2])  # type: ignore[arg-type]
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_snapshot_never_includes_secrets():
    user = get_user_model().objects.create_user(
        username="bob", password="s3cret!", email="b@example.com"
    )
    data = snapshot(user)
    assert "password" not in data
    assert data["username"] == "bob"
    assert "password" not in snapshot(user, fields=["username", "password"])


@pytest.mark.django_db(transaction=True)
def test_emit_on_save_and_delete_inside_the_changing_transaction():
    disconnect = notify.emit_on(
        Group, created="group.created", updated="group.updated", deleted="group.deleted"
    )
    try:
        with transaction.atomic():
            group = Group.objects.create(name="Ops")
            group.name = "Operations"
            group.save()
        group_id = group.pk
        group.delete()
        events = list(
            Event.objects.order_by("pk").values_list("type", "payload", "object_ref", "source")
        )
        ref = f"auth.group:{group_id}"
        assert events == [
            (
                "group.created",
                {"model": "auth.group", "pk": group_id, "object": {"id": group_id, "name": "Ops"}},
                ref,
                "signal",
            ),
            (
                "group.updated",
                {
                    "model": "auth.group",
                    "pk": group_id,
                    "object": {"id": group_id, "name": "Operations"},
                    "changed": ["name"],
                    "changes": {"name": {"old": "Ops", "new": "Operations"}},
                },
                ref,
                "signal",
            ),
            # the delete's payload was taken before the row was gone
            (
                "group.deleted",
                {
                    "model": "auth.group",
                    "pk": group_id,
                    "object": {"id": group_id, "name": "Operations"},
                },
                ref,
                "signal",
            ),
        ]
    finally:
        disconnect()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_change_makes_no_event():
    disconnect = notify.emit_on(Group, created="group.created")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            Group.objects.create(name="Doomed")
            raise RuntimeError("rollback")
        assert Event.objects.count() == 0
    finally:
        disconnect()


@pytest.mark.django_db
def test_unknown_actor_id_is_refused():
    with pytest.raises(ValidationError, match="no user with id 999"):
        notify.trigger("a.b", {}, actor=999)
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_reused_idempotency_key_with_another_payload_is_refused():
    from notify.intake.trigger import IdempotencyKeyReused

    notify.trigger("a.b", {"n": 1}, idempotency_key="k-2")
    with pytest.raises(IdempotencyKeyReused, match="k-2"):
        notify.trigger("a.b", {"n": 2}, idempotency_key="k-2")
    assert Event.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [[], "", 0, {"x": float("nan")}, {"x": float("inf")}])
def test_non_object_or_non_json_payload_is_refused(bad):
    with pytest.raises(ValidationError):
        notify.trigger("a.b", bad)
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_the_returned_event_is_the_stored_row():
    when = datetime.datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.UTC)
    event = notify.trigger(
        "invoice.paid", {"name": "Zoë ✓"}, idempotency_key="k-row", scheduled_for=when
    )
    stored = Event.objects.get(pk=event.pk)
    for field in Event._meta.concrete_fields:
        assert getattr(event, field.attname) == getattr(stored, field.attname), field.name
    assert not event._state.adding
    event.status = Event.State.CANCELLED
    event.save(update_fields=["status"])  # an UPDATE of that row, not a second INSERT
    assert Event.objects.get().status == Event.State.CANCELLED


@pytest.mark.django_db
def test_event_model_signals_still_fire_when_something_listens():
    from django.db.models.signals import post_save

    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.pk, created))

    from notify.intake.trigger import save_signals_wanted

    # Signal bindings listen to every model's saves but never bind notify's own
    # tables: they alone leave trigger() its fast insert.
    assert post_save.has_listeners(Event)
    assert not save_signals_wanted()
    post_save.connect(receiver, sender=Event)
    try:
        assert save_signals_wanted()
        event = notify.trigger("invoice.paid", {"n": 1})
    finally:
        post_save.disconnect(receiver, sender=Event)
    assert seen == [(event.pk, True)]
    assert notify.trigger("invoice.paid", {"n": 2}).pk != event.pk  # and without: no signal
    assert len(seen) == 1
