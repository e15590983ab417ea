"""One way from model changes to events: ``notify.emit_on`` and admin signal
bindings share the receivers, the payload shape and the failure policy
(``rules.model_events``), and cancel conditions read the current row under
the same keys the rule's condition saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction

import notify
from notify.delivery.rendering import template_store
from notify.models import Delivery, Event
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from rules.bindings import binding_index
from rules.model_events import EventNotStored
from rules.models import SignalBinding

User = get_user_model()
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def bind(model, signal: str, event_type: str, **fields) -> SignalBinding:
    binding = SignalBinding(
        content_type=ContentType.objects.get_for_model(model),
        signal=signal,
        event_type=event_type,
        **fields,
    )
    binding.full_clean()
    binding.save()
    return binding


def payloads(prefix: str) -> list[tuple[str, dict, str]]:
    return [
        (e.type.removeprefix(prefix), e.payload, e.object_ref)
        for e in Event.objects.filter(type__startswith=prefix).order_by("pk")
    ]


# -- one payload shape ---------------------------------------------------------------------


@pytest.mark.django_db
def test_emit_on_and_a_binding_make_the_same_payload_for_the_same_change():
    for signal in ("created", "updated", "deleted"):
        bind(Group, signal, f"bound.{signal}", payload_fields=["id", "name"])
    disconnect = notify.emit_on(
        Group,
        created="emitted.created",
        updated="emitted.updated",
        deleted="emitted.deleted",
        fields=["id", "name"],
    )
    try:
        group = Group.objects.create(name="Ops")
        group.name = "Operations"
        group.save()
        pk = group.pk
        group.delete()
    finally:
        disconnect()

    emitted, bound = payloads("emitted."), payloads("bound.")
    assert emitted == bound
    row = {"model": "auth.group", "pk": pk}
    assert emitted == [
        ("created", {**row, "object": {"id": pk, "name": "Ops"}}, f"auth.group:{pk}"),
        (
            "updated",
            {
                **row,
                "object": {"id": pk, "name": "Operations"},
                "changed": ["name"],
                "changes": {"name": {"old": "Ops", "new": "Operations"}},
            },
            f"auth.group:{pk}",
        ),
        ("deleted", {**row, "object": {"id": pk, "name": "Operations"}}, f"auth.group:{pk}"),
    ]


@pytest.mark.django_db
def test_emit_on_keys_the_row_by_field_name_and_leaves_secrets_out(make_user):
    staff = make_user("staff")
    disconnect = notify.emit_on(User, updated="user.updated")
    try:
        staff.set_password("another")
        staff.save()
    finally:
        disconnect()
    [event] = Event.objects.filter(type="user.updated")
    assert event.payload["object"]["username"] == "staff"
    assert "password" not in event.payload["object"]
    assert event.payload["changed"] == ["password"]  # the name, never the value
    assert event.payload["changes"] == {}


def test_emit_on_refuses_a_bad_event_type_when_connecting(db):
    with pytest.raises(ValidationError, match="event type"):
        notify.emit_on(Group, created="Group Created")


# -- cancel conditions read payload.object, whatever made the event -----------------------


@pytest.fixture
def member_reminders(db, settings, tmp_path, make_user, make_rule):
    """Alice is reminded a day after a member joins, unless the member is
    deactivated meanwhile; returns alice."""
    folder = tmp_path / "templates" / "member_reminder"
    folder.mkdir(parents=True)
    (folder / "inapp").write_text("Say hello to {{ payload.object.username }}")
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(tmp_path / "templates"), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    alice = make_user("alice")  # before any source is connected: her joining is no event
    make_rule(
        event_type="member.joined",
        condition="payload.object.is_active",
        recipients=[f"users:{alice.pk}"],
        channels=["inapp"],
        message="member_reminder",
        delay=timedelta(days=1),
        cancel_condition="not payload.object.is_active",
    )
    yield alice
    template_store.refresh(force=True)


def joined_by_trigger(make_user):
    bob = make_user("bob")
    notify.trigger(
        "member.joined",
        {"object": {"username": "bob", "is_active": True}},
        object_ref=f"auth.user:{bob.pk}",
    )
    return bob


def joined_by_emit_on(make_user):
    disconnect = notify.emit_on(User, created="member.joined", fields=["username", "is_active"])
    try:
        return make_user("bob")
    finally:
        disconnect()


def joined_by_binding(make_user):
    bind(User, "created", "member.joined", payload_fields=["username", "is_active"])
    return make_user("bob")


@pytest.mark.parametrize("deactivated", [True, False], ids=["deactivated", "still-active"])
@pytest.mark.parametrize("join", [joined_by_trigger, joined_by_emit_on, joined_by_binding])
def test_a_cancel_condition_on_payload_object_reads_the_current_row(
    member_reminders, make_user, join, deactivated
):
    with time_machine.travel(NOW, tick=False) as clock:
        bob = join(make_user)
        run_until_idle()
        event = Event.objects.get(type="member.joined")
        assert event.object_ref == f"auth.user:{bob.pk}"
        assert event.payload["object"] == {"username": "bob", "is_active": True}
        if deactivated:
            bob.is_active = False
            bob.save()  # the event still says active: the cancel condition reads the row
        clock.move_to(NOW + timedelta(days=1))
        run_until_idle()
    delivery = Delivery.objects.get(notification__event=event)
    if deactivated:
        assert (delivery.status, delivery.error_message) == (
            Status.CANCELLED,
            "cancel condition true: not payload.object.is_active",
        )
    else:
        assert delivery.status == Status.SENT


# -- one failure policy: a failed event store fails the change -----------------------------


@pytest.fixture
def nan_emit_on():
    """emit_on whose payload cannot be stored (NaN is not JSON)."""
    disconnect = notify.emit_on(
        Group,
        created="group.created",
        updated="group.updated",
        deleted="group.deleted",
        payload=lambda group: {"name": group.name, "score": float("nan")},
    )
    yield
    disconnect()


@pytest.fixture
def broken_bindings(db):
    """Bindings whose event type was broken in the database, behind admin's back."""
    for signal in ("created", "updated", "deleted"):
        bind(Group, signal, f"group.{signal}", payload_fields=["name"])
    SignalBinding.objects.update(event_type="Not An Event Type")
    binding_index.clear()


def change(kind: str, group: Group) -> None:
    if kind == "created":
        Group.objects.create(name="New")
    elif kind == "updated":
        group.name = "Renamed"
        group.save()
    else:
        group.delete()


@pytest.mark.parametrize("kind", ["created", "updated", "deleted"])
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nan_emit_on", r"emit_on\(auth.group\).*not JSON-safe"),
        ("broken_bindings", r"signal binding \d+ \(auth.group .*event type"),
    ],
)
def test_a_failed_event_store_fails_the_change(db, request, source, message, kind):
    group = Group.objects.create(name="Existing")  # before the source is connected
    request.getfixturevalue(source)
    before = list(Group.objects.order_by("pk").values_list("pk", "name"))
    with pytest.raises(EventNotStored, match=message) as failed, transaction.atomic():
        change(kind, group)
    assert "could not be stored, so the change fails with it" in str(failed.value)
    assert isinstance(failed.value.__cause__, ValidationError)
    # The change rolled back with its event: the table is as it was.
    assert list(Group.objects.order_by("pk").values_list("pk", "name")) == before
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_failed_store_still_raises_and_a_delete_rolls_back(nan_emit_on):
    with pytest.raises(EventNotStored):
        Group.objects.create(name="Autocommit")  # the INSERT was already committed
    group = Group.objects.get(name="Autocommit")
    with pytest.raises(EventNotStored):
        group.delete()  # Django deletes in a transaction of its own
    assert Group.objects.filter(pk=group.pk).exists()
    assert not Event.objects.exists()
