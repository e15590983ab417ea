"""One fan-out sequence (``notify.fanout.sequence.plan_event``): fan-out writes
what it plans, the admin preview shows what it plans, "send me a test" plans
one rule for one user with it. The preview's decisions equal the rows fan-out
then writes, reasons included (throttled, deduplicated, opted out, digest,
quiet hours, delayed, dry run)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine

from notify.admin.preview import preview_event
from notify.fanout import sequence
from notify.fanout.pipeline import fan_out
from notify.intake.trigger import trigger
from notify.models import CategoryPreference, Delivery, Event, Notification, UserSettings
from notify.pages.sendtest import send_test

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def calls(monkeypatch):
    """Every call of the sequence, with its keyword arguments."""
    seen: list[dict] = []
    original = sequence.plan_event

    def recording(event, **kwargs):
        seen.append({"event": event, **kwargs})
        return original(event, **kwargs)

    monkeypatch.setattr(sequence, "plan_event", recording)
    return seen


def test_fan_out_preview_and_send_test_call_the_one_sequence(calls, make_user, make_rule):
    alice = make_user("alice")
    rule = make_rule(name="Shipped")
    event = trigger("order.shipped", {"order_id": "A-1"}, recipients=[alice])

    preview = preview_event(event, focus=rule)
    assert [r.rule.name for r in preview.matched] == ["Shipped"]
    assert len(calls) == 1 and calls[0]["event"] == event and calls[0]["record"] is False

    stats = fan_out(event)
    assert stats.notifications == 1
    assert len(calls) == 2 and calls[1]["event"] == event and calls[1]["record"] is True

    result = send_test(alice, "inapp")
    assert result.ok
    [call] = calls[2:]
    assert call["event"].type == "notify.test" and call["record"] is True
    assert call["recipients"] == [alice.pk] and call["channels"] == ["inapp"]


def decisions_shown(preview) -> dict[tuple[str, str, str], tuple]:
    return {
        (item.rule.name, person.username, channel.channel): (
            channel.status,
            channel.skip_reason,
            channel.hold_reason,
            channel.due_at or T0,
        )
        for item in preview.matched
        for person in item.recipients
        for channel in person.channels
    }


def rows_written(event) -> dict[tuple[str, str, str], tuple]:
    """A dry-run rule's rows are written skipped (``dry_run``); the ones whose
    text is to be kept are then handed to the worker (pending, still
    ``dry_run``): the decision is the skip."""
    return {
        (d.notification.rule.name, d.notification.user.username, d.channel): (
            "skipped" if d.skip_reason == "dry_run" else d.status,
            d.skip_reason,
            d.hold_reason,
            d.next_attempt_at,
        )
        for d in Delivery.objects.filter(notification__event=event).select_related(
            "notification__rule", "notification__user"
        )
    }


def test_the_preview_decides_what_fan_out_then_writes(make_user, make_rule, category):
    alice, bob, carol, dave, erin = (
        make_user(name) for name in ("alice", "bob", "carol", "dave", "erin")
    )
    CategoryPreference.objects.create(user=bob, category=category, mode="off")
    CategoryPreference.objects.create(user=carol, category=category, mode="daily")
    UserSettings.objects.create(user=dave, quiet_start=time(9), quiet_end=time(12))
    channels = ["email", "inapp", "sms"]  # nobody has a phone: sms is skipped (no_address)
    make_rule(
        name="Throttled",
        channels=channels,
        throttle_limit=1,
        throttle_window=timedelta(days=1),
        throttle_action="drop",
    )
    make_rule(
        name="Deduplicated",
        channels=channels,
        dedup_key="payload.order_id",
        dedup_window=timedelta(hours=2),
    )
    make_rule(name="Later", channels=channels, delay=timedelta(minutes=30))
    make_rule(name="Dry", channels=channels, dry_run=True)
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        earlier = trigger("order.shipped", {"order_id": "A-1"}, recipients=[erin])
        fan_out(earlier)
    with time_machine.travel(T0, tick=False):
        event = trigger(
            "order.shipped",
            {"order_id": "A-1"},
            recipients=[alice, bob, carol, dave, erin],
        )
        preview = preview_event(event)
        assert not Notification.objects.filter(event=event).exists()
        stats = fan_out(event)

    shown = decisions_shown(preview)
    assert shown == rows_written(event)
    # Every kind of decision took part.
    reasons = {(status, skip or hold) for status, skip, hold, _ in shown.values()}
    assert {
        ("pending", ""),
        ("pending", "delayed"),
        ("pending", "quiet_hours"),
        ("skipped", "opted_out"),
        ("skipped", "no_address"),
        ("skipped", "throttled"),
        ("skipped", "dry_run"),
        ("digest", "daily"),
    } <= reasons, reasons
    assert shown[("Throttled", "erin", "email")][:2] == ("skipped", "throttled")
    assert shown[("Throttled", "alice", "email")][:2] == ("pending", "")
    # The duplicate writes nothing; preview and fan-out give the same reason.
    dedup = {r.rule.name: r for r in preview.matched}["Deduplicated"]
    assert dedup.recipients == []
    [skip] = [e for e in stats.errors if "Deduplicated" in e]
    assert "deduplicated" in skip and f"event #{earlier.pk}" in skip
    [note] = dedup.notes
    assert note.removesuffix(": nobody would be notified again") in skip
    assert Event.objects.get(pk=event.pk).status == Event.State.RECEIVED  # fan_out alone


def test_send_test_plans_through_the_sequence_for_one_user_and_channel(calls, make_user, settings):
    ann = make_user("ann")
    UserSettings.objects.create(user=ann, quiet_start=time(9), quiet_end=time(12))
    with time_machine.travel(T0, tick=False):
        result = send_test(ann, "email")
    # The sequence's decision, as for any notification: held for quiet hours.
    [call] = calls
    assert call["channels"] == ["email"] and call["recipients"] == [ann.pk]
    [delivery] = Delivery.objects.filter(notification__event__type="notify.test")
    assert (delivery.channel, delivery.status, delivery.hold_reason) == (
        "email",
        "pending",
        "quiet_hours",
    )
    assert delivery.next_attempt_at == T0.replace(hour=12)
    assert not result.ok and "quiet hours" in result.text
