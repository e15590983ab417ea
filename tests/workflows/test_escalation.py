"""The escalation workflow with a controlled clock: in-app now; if still unread
after 30 minutes, email; if still unread after 2 hours and critical, SMS.
Counted at the receivers (the SMTP and Twilio peers)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import notify
from notify.inbox.store import mark
from notify.models import Delivery, Notification, WorkflowRun, WorkflowStepLog
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.workflows.conftest import NOW

pytestmark = pytest.mark.django_db(transaction=False)


def at(clock, minutes: float) -> None:
    clock.move_to(NOW + timedelta(minutes=minutes))
    run_until_idle()


def channels_sent(user) -> list[str]:
    return sorted(
        Delivery.objects.filter(notification__user=user, status=Status.SENT).values_list(
            "channel", flat=True
        )
    )


def test_read_at_10_minutes_means_no_email_and_no_sms(
    clock, smtp_mailer, twilio_sms, escalation, critical, phone_user
):
    escalation(category=critical)
    alice = phone_user("alice", "+15005550006")
    notify.trigger("order.shipped", {"order_id": "E1"}, recipients=[alice])
    at(clock, 0)
    assert channels_sent(alice) == ["inapp"]
    item = Notification.objects.get(user=alice)
    at(clock, 10)
    assert mark(alice.pk, [item.pk], read=True) == 1
    at(clock, 30)
    at(clock, 120)
    assert smtp_mailer.messages == [] and twilio_sms.messages == []
    run = WorkflowRun.objects.get(user=alice)
    assert run.state == WorkflowRun.State.DONE
    skipped = WorkflowStepLog.objects.filter(run=run, decision="skipped").order_by("position")
    assert next(s.reason for s in skipped).startswith(
        "email skipped because the in-app item was read at +10 min"
    )


def test_unread_email_at_30_minutes_then_sms_at_2_hours_when_critical(
    clock, smtp_mailer, twilio_sms, escalation, critical, phone_user
):
    escalation(category=critical)
    alice = phone_user("alice", "+15005550006")
    notify.trigger("order.shipped", {"order_id": "E2"}, recipients=[alice])
    at(clock, 0)
    at(clock, 29)
    assert smtp_mailer.messages == []
    at(clock, 30)
    assert [m.to for m in smtp_mailer.messages] == ["alice@example.com"]
    assert "E2" in smtp_mailer.messages[0].subject
    at(clock, 119)
    assert twilio_sms.messages == []
    at(clock, 120)
    assert [m.to for m in twilio_sms.messages] == ["+15005550006"]
    assert channels_sent(alice) == ["email", "inapp", "sms"]
    at(clock, 600)  # nothing more, ever
    assert len(smtp_mailer.messages) == 1 and len(twilio_sms.messages) == 1
    assert WorkflowRun.objects.get(user=alice).state == WorkflowRun.State.DONE


def test_unread_but_not_critical_gets_the_email_and_no_sms(
    clock, smtp_mailer, twilio_sms, escalation, phone_user
):
    escalation()  # the "orders" category: not critical
    alice = phone_user("alice", "+15005550006")
    notify.trigger("order.shipped", {"order_id": "E3"}, recipients=[alice])
    for minute in (0, 30, 120, 240):
        at(clock, minute)
    assert len(smtp_mailer.messages) == 1
    assert twilio_sms.messages == []
    assert not Delivery.objects.filter(channel="sms").exists()
    reasons = list(
        WorkflowStepLog.objects.filter(decision="skipped").values_list("reason", flat=True)
    )
    assert reasons == ["sms skipped: condition false (not read and category.critical)"]


def test_a_cancelled_run_sends_nothing_more(
    clock, smtp_mailer, twilio_sms, escalation, critical, phone_user
):
    escalation(category=critical)
    alice = phone_user("alice", "+15005550006")
    event = notify.trigger(
        "order.shipped", {"order_id": "E4"}, recipients=[alice], idempotency_key="incident-4"
    )
    at(clock, 0)
    assert channels_sent(alice) == ["inapp"]
    at(clock, 5)
    notify.cancel("incident-4")
    for minute in (30, 120, 600):
        at(clock, minute)
    assert smtp_mailer.messages == [] and twilio_sms.messages == []
    run = WorkflowRun.objects.get(event=event)
    assert run.state == WorkflowRun.State.CANCELLED
    assert WorkflowStepLog.objects.filter(run=run, decision="cancelled").exists()
