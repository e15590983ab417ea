"""The ops controls at fan-out: throttling and deduplication at their window
boundaries (time_machine), dry runs, fallback channels, active windows,
subscriptions (followers, topics, the actor left out) and stop-after-this-rule."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.utils import timezone

import notify
from notify.fanout.pipeline import fan_out, process_event
from notify.intake.trigger import trigger
from notify.models import ContactPoint, Delivery, DeliveryAttempt, Event, Notification
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from rules.models import DedupRecord

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


def deliveries(event) -> dict[tuple[int, str], tuple[str, str]]:
    return {
        (d.notification.user_id, d.channel): (d.status, d.skip_reason)
        for d in Delivery.objects.filter(notification__event=event).select_related("notification")
    }


def shipped(user, **payload):
    return trigger("order.shipped", {"order_id": "A-1", **payload}, recipients=[user])


# -- throttle ------------------------------------------------------------------------------------


def test_throttle_holds_at_its_window_boundary(make_user, make_rule):
    """At most 2 per user per hour: a notification counts while now - t < 1h."""
    alice = make_user("alice")
    make_rule(throttle_limit=2, throttle_window=timedelta(hours=1), throttle_action="drop")
    outcomes = []
    for at in (
        T0,
        T0 + timedelta(minutes=10),
        T0 + timedelta(hours=1) - timedelta(microseconds=1),  # T0's still counts: over
        T0 + timedelta(hours=1),  # T0's no longer counts (the throttled one never does)
        T0 + timedelta(hours=1, seconds=1),  # +10 min and +1 h count: over again
    ):
        with time_machine.travel(at, tick=False):
            event = shipped(alice)
            fan_out(event)
        outcomes.append(deliveries(event)[(alice.pk, "email")])
    assert outcomes == [
        ("pending", ""),
        ("pending", ""),
        ("skipped", "throttled"),
        ("pending", ""),
        ("skipped", "throttled"),
    ]
    # Recorded either way: the throttled ones are notifications with skipped deliveries.
    assert Notification.objects.filter(user=alice).count() == 5


def test_throttle_folds_into_the_digest(make_user, make_rule):
    alice, bob = make_user("alice"), make_user("bob")
    make_rule(throttle_limit=1, throttle_window=timedelta(days=1), throttle_action="digest")
    with time_machine.travel(T0, tick=False):
        fan_out(trigger("order.shipped", {"order_id": 1}, recipients=[alice]))
    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        event = trigger("order.shipped", {"order_id": 2}, recipients=[alice, bob])
        fan_out(event)
    outcome = deliveries(event)
    assert outcome[(alice.pk, "email")] == ("digest", "throttled")  # the next digest has it
    assert outcome[(alice.pk, "inapp")] == ("pending", "")  # the inbox shows it, as in digest mode
    assert outcome[(bob.pk, "email")] == ("pending", "")  # bob had none yet


def test_category_throttle_counts_every_rule_of_the_category(make_user, make_rule):
    alice = make_user("alice")
    make_rule(event_type="order.shipped")
    make_rule(
        event_type="order.delivered",
        throttle_limit=1,
        throttle_window=timedelta(hours=1),
        throttle_scope="category",
        throttle_action="drop",
    )
    with time_machine.travel(T0, tick=False):
        fan_out(shipped(alice))
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        event = trigger("order.delivered", {"order_id": "A-1"}, recipients=[alice])
        fan_out(event)
    assert deliveries(event)[(alice.pk, "email")] == ("skipped", "throttled")


# -- deduplication -------------------------------------------------------------------------------


def test_dedup_holds_at_its_window_boundary(make_user, make_rule):
    alice = make_user("alice")
    make_rule(dedup_key="payload.order_id", dedup_window=timedelta(minutes=10))

    def at(moment, order_id="A-1"):
        with time_machine.travel(moment, tick=False):
            event = trigger("order.shipped", {"order_id": order_id}, recipients=[alice])
            process_event(event.pk)
        event.refresh_from_db()
        return event

    first = at(T0)
    duplicate = at(T0 + timedelta(minutes=10) - timedelta(microseconds=1))
    other_key = at(T0 + timedelta(minutes=1), "B-2")
    next_window = at(T0 + timedelta(minutes=10))  # the window's end: notifies again
    within_new = at(T0 + timedelta(minutes=15))
    assert Notification.objects.filter(event=first).count() == 1
    assert Notification.objects.filter(event=duplicate).count() == 0
    assert Notification.objects.filter(event=other_key).count() == 1
    assert Notification.objects.filter(event=next_window).count() == 1
    assert Notification.objects.filter(event=within_new).count() == 0
    # The fan-out records why, per rule.
    assert duplicate.status == Event.State.PROCESSED
    assert "deduplicated" in duplicate.error and f"event #{first.pk}" in duplicate.error
    assert f"event #{next_window.pk}" in within_new.error
    assert first.error == ""
    # Fanning the first event out again (a retry) does not make it a duplicate of itself.
    with time_machine.travel(T0 + timedelta(minutes=20), tick=False):
        stats = fan_out(Event.objects.get(pk=next_window.pk))
    assert stats.rules == 1 and not stats.errors
    assert DedupRecord.objects.count() == 2  # one per key


def test_an_empty_key_never_deduplicates_and_a_broken_one_fails_its_rule(make_user, make_rule):
    """A key that cannot be evaluated fails that rule for the event (sending
    anyway could repeat every duplicate); the other rules go on (issue 12)."""
    alice = make_user("alice")
    make_rule(dedup_key="payload.order_id", dedup_window=timedelta(hours=1))
    make_rule(name="broken key", dedup_key="payload.order_id > 3", dedup_window=timedelta(hours=1))
    for _ in range(2):
        event = trigger("order.shipped", {"order_id": None}, recipients=[alice])
        stats = fan_out(event)
        assert stats.rules == 1
        assert [e[1:3] for e in stats.rule_errors] == [("broken key", "dedup_key")]
    assert Notification.objects.count() == 2
    assert any("deduplication key not evaluated" in e for e in stats.errors)


# -- dry run -------------------------------------------------------------------------------------


def test_a_dry_run_rule_records_what_it_would_send_and_sends_nothing(
    make_user, make_rule, smtp_mailer
):
    alice = make_user("alice", first_name="Alice")
    bob = make_user("bob")
    notify.models.CategoryPreference.objects.create(
        user=bob, category_id=make_rule(dry_run=True).category_id, mode="off"
    )
    event = shipped(alice, carrier="DHL")
    event.recipients = [alice.pk, bob.pk]
    event.save()
    process_event(event.pk)
    run_until_idle()  # the worker renders a dry run, as it would send it
    outcome = deliveries(event)
    assert outcome[(alice.pk, "email")] == ("skipped", "dry_run")
    assert outcome[(alice.pk, "inapp")] == ("skipped", "dry_run")
    assert outcome[(bob.pk, "email")] == ("skipped", "opted_out")  # what preferences said stays
    attempt = DeliveryAttempt.objects.get(
        delivery__notification__user=alice, delivery__channel="email"
    )
    assert attempt.outcome == "skipped" and attempt.provider == "dry_run"
    assert attempt.sent["subject"] == "Your order A-1 has shipped"
    assert "Hi Alice" in attempt.sent["text"] and attempt.sent["to"] == "alice@example.com"
    run_until_idle()
    assert smtp_mailer.messages == []
    assert not Notification.objects.filter(inbox_at__isnull=False).exists()


# -- fallback ------------------------------------------------------------------------------------


def test_sms_only_when_the_user_has_no_email(make_user, make_rule):
    with_email = make_user("alice")
    without = make_user("bob", email="")
    for user in (with_email, without):
        ContactPoint.objects.create(
            user=user,
            kind="phone",
            address=f"+3361234567{user.pk % 10}",
            verified_at=timezone.now(),
        )
    make_rule(channels=["email", "sms"], fallback={"sms": "email"})
    event = trigger("order.shipped", {"order_id": 1}, recipients=[with_email, without])
    fan_out(event)
    outcome = deliveries(event)
    assert outcome[(with_email.pk, "email")] == ("pending", "")
    assert outcome[(with_email.pk, "sms")] == ("skipped", "fallback_not_needed")
    assert outcome[(without.pk, "email")] == ("skipped", "no_address")
    assert outcome[(without.pk, "sms")] == ("pending", "")


# -- active window -------------------------------------------------------------------------------


def test_outside_business_hours_deliveries_wait_for_the_window(make_user, make_rule):
    alice = make_user("alice")
    make_rule(
        active_days=[0, 1, 2, 3, 4],
        active_from=time(9),
        active_until=time(17),
        active_timezone="Europe/Paris",
    )
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    with time_machine.travel(saturday, tick=False):
        event = shipped(alice)
        fan_out(event)
    held = Delivery.objects.filter(notification__event=event)
    assert {(d.status, d.hold_reason) for d in held} == {("pending", "outside_active_window")}
    monday_nine_paris = datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert {d.next_attempt_at for d in held} == {monday_nine_paris}
    with time_machine.travel(datetime(2026, 11, 30, 9, tzinfo=UTC), tick=False):
        event = shipped(alice)
        fan_out(event)
    assert {d.hold_reason for d in Delivery.objects.filter(notification__event=event)} == {""}


# -- subscriptions -------------------------------------------------------------------------------


def test_followers_and_topics_leave_the_actor_out(make_user, make_rule):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    group = Group.objects.create(name="Shipping")
    assert notify.subscribe(alice, group) is True
    assert notify.subscribe(alice, group) is False  # idempotent
    notify.subscribe(bob, group)
    notify.subscribe(carol, "releases")
    notify.subscribe(bob, "topic:releases")
    make_rule(name="followers", recipients=["followers"])
    make_rule(name="topic", event_type="release.published", recipients=["topic:releases"])
    make_rule(
        name="topic, actor too",
        event_type="release.published",
        recipients=["topic:releases"],
        exclude_actor=False,
    )
    event = trigger("order.shipped", {}, actor=alice, object_ref=f"auth.group:{group.pk}")
    fan_out(event)
    assert set(Notification.objects.filter(event=event).values_list("user_id", flat=True)) == {
        bob.pk
    }
    event = trigger("release.published", {}, actor=bob)
    fan_out(event)
    by_rule = {
        (n.rule.name, n.user_id)
        for n in Notification.objects.filter(event=event).select_related("rule")
    }
    assert by_rule == {
        ("topic", carol.pk),
        ("topic, actor too", carol.pk),
        ("topic, actor too", bob.pk),
    }
    assert notify.unsubscribe(bob, "releases") is True
    assert notify.unsubscribe(bob, "releases") is False
    # No object, no followers.
    event = trigger("order.shipped", {}, actor=carol)
    assert fan_out(event).recipients == 0


def test_subscribe_refuses_what_cannot_be_followed(make_user):
    from django.core.exceptions import ValidationError

    alice = make_user("alice")
    with pytest.raises(ValidationError, match="topic name"):
        notify.subscribe(alice, "no spaces please")
    with pytest.raises(ValidationError, match="save the object"):
        notify.subscribe(alice, Group(name="unsaved"))


# -- stop after this rule ------------------------------------------------------------------------


def test_stop_after_this_rule_at_fan_out(make_user, make_rule):
    alice = make_user("alice")
    make_rule(name="VIP", priority=10, condition="payload.vip", stop_processing=True)
    make_rule(name="everyone", priority=0)
    fan_out(shipped(alice, vip=True))
    fan_out(shipped(alice, vip=False))
    names = list(Notification.objects.order_by("pk").values_list("rule__name", flat=True))
    assert names == ["VIP", "everyone"]
    assert Status.PENDING == "pending"
