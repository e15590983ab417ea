"""Reminders, delayed and scheduled sends, cancel conditions, quiet hours at
fan-out and at send time, and ``notify.schedule`` / ``notify.cancel``."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

import notify
from notify.delivery.rendering import template_store
from notify.fanout.pipeline import process_event
from notify.intake.model_signals import emit_on
from notify.intake.scheduled import EventNotFound, NotCancellable
from notify.models import Delivery, DeliveryAttempt, Event, UserSettings
from notify.models.status import Status
from notify.runtime.worker import run_until_idle

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


def deliveries(event: Event) -> dict[str, Delivery]:
    return {d.channel: d for d in Delivery.objects.filter(notification__event=event)}


# -- delayed and scheduled sends ----------------------------------------------------------


def test_a_delayed_rule_sends_after_its_delay(smtp_mailer, clock, make_rule, alice):
    make_rule(delay=timedelta(hours=2))
    event = notify.trigger("order.shipped", {"order_id": "D1"}, recipients=[alice])
    run_until_idle()
    rows = deliveries(event)
    assert {(d.status, d.hold_reason, d.next_attempt_at) for d in rows.values()} == {
        (Status.PENDING, "delayed", NOW + timedelta(hours=2))
    }
    assert not smtp_mailer.messages
    clock.move_to(NOW + timedelta(hours=2))
    run_until_idle()
    assert [m.subject for m in smtp_mailer.messages] == ["Your order D1 has shipped"]
    assert deliveries(event)["inapp"].status == Status.SENT


@pytest.mark.parametrize(
    ("starts_at", "expected"),
    [
        ("2026-11-22T10:00:00+01:00", datetime(2026, 11, 21, 9, tzinfo=UTC)),
        ("2026-11-22T10:00:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),  # naive: UTC
        ("2026-11-22T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
    ],
)
def test_a_reminder_goes_at_the_payload_time_plus_its_offset(
    clock, make_rule, alice, starts_at, expected
):
    make_rule(send_at_path="meeting.starts_at", send_at_offset=timedelta(hours=-24))
    event = notify.trigger(
        "order.shipped", {"order_id": "M1", "meeting": {"starts_at": starts_at}}, recipients=[alice]
    )
    process_event(event.pk)
    assert {(d.hold_reason, d.next_attempt_at) for d in deliveries(event).values()} == {
        ("scheduled", expected)
    }


def test_a_reminder_whose_time_has_passed_goes_at_once(clock, make_rule, alice):
    make_rule(send_at_path="starts_at", send_at_offset=timedelta(hours=-24))
    event = notify.trigger(
        "order.shipped", {"order_id": "M2", "starts_at": "2026-11-20T18:00:00Z"}, recipients=[alice]
    )
    process_event(event.pk)
    assert {(d.hold_reason, d.next_attempt_at) for d in deliveries(event).values()} == {("", NOW)}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "the payload has no 'starts_at'"),
        ({"starts_at": "next tuesday"}, "not an ISO 8601 date-time"),
        ({"starts_at": 1767225600}, "expected an ISO 8601 date-time string"),
    ],
)
def test_a_missing_or_invalid_payload_time_is_recorded_and_other_rules_go_on(
    clock, make_rule, alice, payload, message
):
    reminder = make_rule(name="reminder", send_at_path="starts_at", priority=5)
    make_rule(name="at once")
    event = notify.trigger("order.shipped", {"order_id": "M3", **payload}, recipients=[alice])
    stats = process_event(event.pk)
    event.refresh_from_db()
    assert event.status == Event.State.PROCESSED  # kept, and not retried
    assert f"rule {reminder.pk} (reminder)" in event.error
    assert message in event.error
    assert stats.errors and message in stats.errors[0]
    rules = set(
        Delivery.objects.filter(notification__event=event).values_list(
            "notification__rule__name", flat=True
        )
    )
    assert rules == {"at once"}


# -- cancel conditions -----------------------------------------------------------------------


@pytest.fixture
def team_events(db, settings, tmp_path):
    """Groups make "team.created" events; a "team_reminder" message for them."""
    folder = tmp_path / "templates" / "team_reminder"
    folder.mkdir(parents=True)
    (folder / "email.subject").write_text("Reminder: {{ payload.object.name }}")
    (folder / "email.txt").write_text("Team {{ payload.object.name }} is waiting for you.")
    (folder / "inapp").write_text("Reminder: {{ payload.object.name }}")
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(tmp_path / "templates"), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    disconnect = emit_on(Group, created="team.created")
    yield
    disconnect()
    template_store.refresh(force=True)


def test_a_reminder_whose_cancel_condition_became_true_is_not_sent(
    smtp_mailer, clock, make_rule, alice, team_events
):
    make_rule(
        event_type="team.created",
        recipients=[f"users:{alice.pk}"],
        message="team_reminder",
        delay=timedelta(days=1),
        cancel_condition="payload.object.name.startswith('archived')",
    )
    team = Group.objects.create(name="Launch")
    run_until_idle()
    event = Event.objects.get(type="team.created")
    assert event.object_ref == f"auth.group:{team.pk}"
    team.name = "archived: Launch"
    team.save()  # the event's payload still says "Launch": the condition reads the row
    clock.move_to(NOW + timedelta(days=1))
    run_until_idle()

    assert not smtp_mailer.messages
    for delivery in deliveries(event).values():
        assert delivery.status == Status.CANCELLED
        assert delivery.skip_reason == "cancel condition true: payload.object.name.startsw"
        assert delivery.error_message == (
            "cancel condition true: payload.object.name.startswith('archived')"
        )
        [attempt] = delivery.attempt_log.all()
        assert attempt.outcome == DeliveryAttempt.Outcome.SKIPPED


def test_a_reminder_whose_cancel_condition_is_false_is_sent(
    smtp_mailer, clock, make_rule, alice, team_events
):
    make_rule(
        event_type="team.created",
        recipients=[f"users:{alice.pk}"],
        message="team_reminder",
        channels=["email"],
        delay=timedelta(hours=1),
        cancel_condition="payload.object.name.startswith('archived')",
    )
    Group.objects.create(name="Launch")
    run_until_idle()
    clock.move_to(NOW + timedelta(hours=1))
    run_until_idle()
    assert len(smtp_mailer.messages) == 1


def test_a_reminder_about_a_deleted_object_is_cancelled(
    smtp_mailer, clock, make_rule, alice, team_events
):
    make_rule(
        event_type="team.created",
        recipients=[f"users:{alice.pk}"],
        message="team_reminder",
        channels=["email"],
        delay=timedelta(hours=1),
        cancel_condition="payload.object.name == 'never'",
    )
    team = Group.objects.create(name="Launch")
    run_until_idle()
    team.delete()
    clock.move_to(NOW + timedelta(hours=1))
    run_until_idle()
    assert not smtp_mailer.messages
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.skip_reason) == (Status.CANCELLED, "object deleted")
    assert "no longer exists" in delivery.error_message


def test_a_cancel_condition_that_cannot_be_evaluated_fails_the_delivery(clock, make_rule, alice):
    make_rule(channels=["email"], cancel_condition="payload.order.paid")
    event = notify.trigger("order.shipped", {"order_id": "C1"}, recipients=[alice])
    run_until_idle()
    delivery = deliveries(event)["email"]
    assert (delivery.status, delivery.error_code) == (Status.FAILED, "cancel_condition")
    assert "cancel condition" in delivery.error_message


# -- quiet hours -------------------------------------------------------------------------------


def quiet(user, start=time(22), end=time(7), tz="Europe/Berlin"):
    UserSettings.objects.update_or_create(
        user=user, defaults={"quiet_start": start, "quiet_end": end, "timezone": tz}
    )


def test_a_message_in_quiet_hours_waits_and_then_goes(smtp_mailer, make_rule, alice):
    make_rule(channels=["email", "inapp"])
    quiet(alice)
    night = datetime(2026, 11, 20, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    with time_machine.travel(night, tick=False) as clock:
        event = notify.trigger("order.shipped", {"order_id": "Q1"}, recipients=[alice])
        run_until_idle()
        rows = deliveries(event)
        assert rows["inapp"].status == Status.SENT  # the in-app item appears at once
        email = rows["email"]
        assert (email.status, email.hold_reason, email.next_attempt_at) == (
            Status.PENDING,
            "quiet_hours",
            datetime(2026, 11, 21, 6, tzinfo=UTC),  # 07:00 in Berlin
        )
        assert not smtp_mailer.messages
        clock.move_to(datetime(2026, 11, 21, 6, tzinfo=UTC))
        run_until_idle()
    assert [m.subject for m in smtp_mailer.messages] == ["Your order Q1 has shipped"]
    email.refresh_from_db()
    assert (email.status, email.attempts) == (Status.SENT, 1)


def test_quiet_hours_set_after_fan_out_hold_at_send_time_without_an_attempt(
    smtp_mailer, make_rule, alice
):
    make_rule(channels=["email"], delay=timedelta(hours=1))
    evening = datetime(2026, 11, 20, 20, 30, tzinfo=UTC)  # 21:30 in Berlin
    with time_machine.travel(evening, tick=False) as clock:
        event = notify.trigger("order.shipped", {"order_id": "Q2"}, recipients=[alice])
        run_until_idle()
        quiet(alice)  # the user sets quiet hours while the reminder waits
        clock.move_to(evening + timedelta(hours=1))  # 22:30 in Berlin
        run_until_idle()
        email = deliveries(event)["email"]
        assert (email.status, email.hold_reason, email.attempts) == (
            Status.PENDING,
            "quiet_hours",
            0,
        )
        assert email.next_attempt_at == datetime(2026, 11, 21, 6, tzinfo=UTC)
        assert not email.attempt_log.exists()
        clock.move_to(datetime(2026, 11, 21, 6, tzinfo=UTC))
        run_until_idle()
    assert len(smtp_mailer.messages) == 1


def test_critical_messages_ignore_quiet_hours(smtp_mailer, make_rule, category, alice):
    category.critical = True
    category.save()
    make_rule(channels=["email"])
    quiet(alice)
    with time_machine.travel(datetime(2026, 11, 20, 23, tzinfo=UTC), tick=False):
        notify.trigger("order.shipped", {"order_id": "Q3"}, recipients=[alice])
        run_until_idle()
    assert len(smtp_mailer.messages) == 1


# -- notify.schedule and notify.cancel ------------------------------------------------------


def test_a_scheduled_event_is_fanned_out_when_due(smtp_mailer, clock, make_rule, alice):
    make_rule(channels=["email"])
    event = notify.schedule(
        "order.shipped",
        {"order_id": "S1"},
        at=NOW + timedelta(hours=3),
        recipients=[alice],
        idempotency_key="s1",
    )
    assert event.scheduled_for == NOW + timedelta(hours=3)
    run_until_idle()
    event.refresh_from_db()
    assert event.status == Event.State.RECEIVED
    clock.move_to(NOW + timedelta(hours=3))
    run_until_idle()
    event.refresh_from_db()
    assert event.status == Event.State.PROCESSED
    assert len(smtp_mailer.messages) == 1


def test_schedule_wants_an_aware_time(db):
    with pytest.raises(ValidationError, match="timezone-aware"):
        notify.schedule("order.shipped", {}, at=datetime(2026, 11, 20, 12))


def test_cancel_a_scheduled_event_before_it_is_due(smtp_mailer, clock, make_rule, alice):
    make_rule(channels=["email"])
    notify.schedule(
        "order.shipped",
        {"order_id": "S2"},
        at=NOW + timedelta(hours=1),
        recipients=[alice],
        idempotency_key="s2",
    )
    result = notify.cancel("s2")
    assert (result.event.status, result.event_cancelled) == (Event.State.CANCELLED, True)
    assert notify.cancel("s2").event_cancelled  # again: harmless
    clock.move_to(NOW + timedelta(hours=2))
    run_until_idle()
    assert not smtp_mailer.messages
    assert not Delivery.objects.exists()


def test_cancel_a_fanned_out_reminder_cancels_what_is_pending(smtp_mailer, clock, make_rule, alice):
    make_rule(channels=["email", "inapp"], delay=timedelta(hours=1))
    event = notify.trigger(
        "order.shipped", {"order_id": "S3"}, recipients=[alice], idempotency_key="s3"
    )
    run_until_idle()
    result = notify.cancel("s3")
    assert (result.event_cancelled, result.deliveries_cancelled) == (False, 2)
    assert {(d.status, d.skip_reason) for d in deliveries(event).values()} == {
        (Status.CANCELLED, "cancelled by the caller")
    }
    clock.move_to(NOW + timedelta(hours=1))
    run_until_idle()
    assert not smtp_mailer.messages


def test_cancel_after_everything_was_sent_is_refused(smtp_mailer, clock, make_rule, alice):
    make_rule(channels=["email"])
    notify.trigger("order.shipped", {"order_id": "S4"}, recipients=[alice], idempotency_key="s4")
    run_until_idle()
    with pytest.raises(NotCancellable) as refused:
        notify.cancel("s4")
    assert refused.value.code == "already_sent"
    with pytest.raises(EventNotFound):
        notify.cancel("nope")
    with pytest.raises(EventNotFound):
        notify.cancel("s4", scope="api:1")  # keys are per scope
