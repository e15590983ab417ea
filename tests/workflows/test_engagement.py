"""Engagement signals a workflow step reads: the signed click redirect (marks
the notification read everywhere), ESP opens and clicks (anymail, Postmark's
payloads through the real webhook view), in-app "seen" when the inbox is
listed, SMS "delivered" from Twilio's status callback."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import signing

import notify
from notify.models import Delivery, Notification, WorkflowStepLog
from notify.models.status import Status
from notify.outbox.engagement import click_url
from notify.runtime.worker import run_until_idle
from tests.webhooks.test_webhooks_anymail import SECRET, URL, basic_auth, payload
from tests.workflows.conftest import NOW, add_steps


def at(clock, minutes: float) -> None:
    clock.move_to(NOW + timedelta(minutes=minutes))
    run_until_idle()


def test_a_click_through_the_signed_redirect_reads_it_and_stops_the_escalation(
    client, clock, smtp_mailer, twilio_sms, escalation, critical, phone_user
):
    escalation(category=critical)
    alice = phone_user("alice", "+15005550006")
    notify.trigger(
        "order.shipped", {"order_id": "C1", "url": "https://shop.example/o/C1"}, recipients=[alice]
    )
    at(clock, 0)
    at(clock, 30)  # unread: the email goes
    assert len(smtp_mailer.messages) == 1
    item = Notification.objects.get(user=alice)
    at(clock, 40)
    response = client.get(click_url(item.pk, "https://shop.example/o/C1").split("8000", 1)[1])
    assert (response.status_code, response["Location"]) == (302, "https://shop.example/o/C1")
    item.refresh_from_db()
    assert item.clicked_at == item.read_at == NOW + timedelta(minutes=40)
    at(clock, 120)
    assert twilio_sms.messages == []  # read everywhere: no SMS
    skipped = WorkflowStepLog.objects.get(decision="skipped")
    assert skipped.reason.startswith("sms skipped because the in-app item was read at +40 min")


def test_a_forged_or_foreign_click_link_is_refused_and_changes_nothing(client, db, make_user):
    bad = signing.dumps({"n": 1, "u": "javascript:alert(1)"}, salt="notify.click")
    assert client.get(f"/r/{bad}").status_code == 400
    assert client.get("/r/not-a-token").status_code == 400
    forged = signing.dumps({"n": 1, "u": "https://evil.example"}, salt="other")
    response = client.get(f"/r/{forged}")
    assert response.status_code == 400 and b"bad signature" in response.content


@pytest.fixture
def postmark(settings, esp_mailer):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
        },
    }
    settings.ANYMAIL = {**getattr(settings, "ANYMAIL", {}), "WEBHOOK_SECRET": SECRET}
    return esp_mailer


@pytest.mark.parametrize(("report", "field"), [("open", "opened_at"), ("click", "clicked_at")])
def test_esp_opens_and_clicks_are_recorded_and_read_by_the_next_step(
    client, clock, postmark, twilio_sms, make_rule, critical, phone_user, report, field
):
    rule = make_rule(name="email first", category=critical, channels=[])
    add_steps(
        rule,
        {"kind": "channel", "channels": ["email"]},
        {"kind": "delay", "delay": timedelta(hours=1)},
        {"kind": "channel", "channels": ["sms"], "condition": "not opened"},
    )
    alice = phone_user("alice", "+15005550006")
    notify.trigger("order.shipped", {"order_id": "P1"}, recipients=[alice])
    at(clock, 0)
    email = Delivery.objects.get(channel="email")
    assert email.status == Status.SENT
    body = payload(report, MessageID=email.provider_message_id, Recipient=alice.email)
    response = client.post(URL, data=body, content_type="application/json", **basic_auth(SECRET))
    assert response.status_code == 200
    item = Notification.objects.get()
    assert getattr(item, field) is not None
    assert (item.read_at is not None) == (report == "click")  # a click reads it
    at(clock, 60)
    assert twilio_sms.messages == []


def test_inbox_listing_marks_items_seen(client, clock, make_rule, make_user):
    rule = make_rule(name="seen", channels=[])
    add_steps(
        rule,
        {"kind": "channel", "channels": ["inapp"]},
        {"kind": "delay", "delay": timedelta(minutes=5)},
        {"kind": "channel", "channels": ["email"], "condition": "not seen"},
    )
    alice, bob = make_user("alice"), make_user("bob")
    notify.trigger("order.shipped", {"order_id": "S1"}, recipients=[alice, bob])
    at(clock, 0)
    client.force_login(alice)
    assert client.get("/api/v1/inbox").status_code == 200
    assert Notification.objects.get(user=alice).seen_at == NOW
    assert Notification.objects.get(user=bob).seen_at is None
    at(clock, 5)
    emails = Delivery.objects.filter(channel="email")
    assert [d.notification.user_id for d in emails] == [bob.pk]


def test_sms_delivered_from_twilio_is_the_next_steps_delivered(
    clock, twilio_webhooks, smtp_mailer, make_rule, phone_user
):
    rule = make_rule(name="sms first", channels=[])
    add_steps(
        rule,
        {"kind": "channel", "channels": ["sms"]},
        {"kind": "delay", "delay": timedelta(minutes=10)},
        {"kind": "channel", "channels": ["email"], "condition": "not delivered"},
    )
    alice = phone_user("alice", "+15005550006")
    bob = phone_user("bob", "+15005550007")
    notify.trigger("order.shipped", {"order_id": "T1"}, recipients=[alice, bob])
    at(clock, 0)
    sms = Delivery.objects.get(channel="sms", notification__user=alice)
    assert twilio_webhooks.status(sms.provider_message_id, "delivered").status_code == 204
    at(clock, 10)
    assert [m.to for m in smtp_mailer.messages] == [bob.email]
