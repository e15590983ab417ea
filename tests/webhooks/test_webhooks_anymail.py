"""Postmark tracking webhooks through django-anymail, end to end.

Emails are really sent (rule → worker → EmailChannel → anymail's Postmark
backend → the local Postmark peer), so each delivery holds the MessageID the
peer gave it. Postmark's documented webhook payloads (``tests/fixtures/postmark``)
carrying that MessageID are then posted to ``/webhooks/anymail/postmark/tracking/``
with the basic-auth credentials of ``ANYMAIL["WEBHOOK_SECRET"]``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from notify import trigger
from notify.models import Delivery, ProviderEvent, Suppression
from notify.models.status import Status
from notify.preferences.suppressions import is_suppressed
from notify.runtime.worker import run_until_idle

FIXTURES = Path(__file__).parent.parent / "fixtures" / "postmark"
URL = "/webhooks/anymail/postmark/tracking/"
SECRET = "postmark:webhook-s3cret"


def payload(name: str, **fields: Any) -> dict[str, Any]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    data.update(fields)
    return data


def basic_auth(credentials: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(credentials.encode()).decode()}


@pytest.fixture
def webhook(client, settings):
    """Post a payload to the tracking webhook, with the right credentials unless told."""
    settings.ANYMAIL = {**getattr(settings, "ANYMAIL", {}), "WEBHOOK_SECRET": SECRET}

    def post(data: dict[str, Any], credentials: str | None = SECRET):
        headers = basic_auth(credentials) if credentials is not None else {}
        return client.post(URL, data=json.dumps(data), content_type="application/json", **headers)

    return post


@pytest.fixture
def postmark_email(settings, esp_mailer, make_user, make_rule):
    """Email through Postmark (the local peer); ``send(user)`` returns the delivery."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "postmark"}},
        },
    }
    make_rule(channels=["email"])
    counter = iter(range(1, 1000))

    def send(user) -> Delivery:
        event = trigger("order.shipped", {"order_id": f"A{next(counter)}"}, recipients=[user])
        run_until_idle()
        return Delivery.objects.get(notification__event=event)

    return send


@pytest.fixture
def sent(postmark_email, make_user, esp_mailer):
    """Alice's email, accepted by Postmark."""
    alice = make_user("alice")
    delivery = postmark_email(alice)
    assert delivery.status == Status.SENT
    assert delivery.provider == "postmark"
    [message] = esp_mailer.messages
    assert delivery.provider_message_id == message.message_id
    return alice, delivery


def test_the_route_is_anymails_postmark_tracking_view():
    assert reverse("anymail-postmark-tracking") == URL


def test_delivered_moves_the_delivery(sent, webhook):
    alice, delivery = sent
    body = payload("delivery", MessageID=delivery.provider_message_id, Recipient=alice.email)
    assert webhook(body).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == Status.DELIVERED
    assert delivery.delivered_at is not None
    [event] = ProviderEvent.objects.all()
    assert (event.provider, event.event_type, event.delivery_id) == (
        "postmark",
        "delivered",
        delivery.pk,
    )
    assert event.payload == body
    assert not Suppression.objects.exists()


def test_hard_bounce_bounces_and_suppresses(sent, webhook):
    alice, delivery = sent
    body = payload("hard_bounce", MessageID=delivery.provider_message_id, Email=alice.email.upper())
    assert webhook(body).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == Status.BOUNCED
    assert delivery.error_code == "bounced"
    assert "unable to deliver your message" in delivery.error_message
    assert "550 5.1.1" in delivery.error_message
    [suppression] = Suppression.objects.all()
    assert (suppression.kind, suppression.address) == ("email", alice.email)  # normalised
    assert (suppression.reason, suppression.source) == (Suppression.Reason.HARD_BOUNCE, "postmark")
    assert suppression.active

    # Postmark retries a webhook it thinks failed: the replay changes nothing more.
    assert webhook(body).status_code == 200
    assert Suppression.objects.count() == 1
    assert ProviderEvent.objects.filter(event_type="bounced").count() == 2


def test_a_late_bounce_after_delivered_is_still_recorded(sent, webhook):
    alice, delivery = sent
    webhook(payload("delivery", MessageID=delivery.provider_message_id, Recipient=alice.email))
    webhook(payload("hard_bounce", MessageID=delivery.provider_message_id, Email=alice.email))
    delivery.refresh_from_db()
    assert delivery.status == Status.BOUNCED
    assert is_suppressed("email", alice.email)


def test_spam_complaint_suppresses_and_keeps_the_status(sent, webhook):
    alice, delivery = sent
    body = payload("spam_complaint", MessageID=delivery.provider_message_id, Email=alice.email)
    assert webhook(body).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == Status.SENT  # it was delivered; the complaint came after
    [suppression] = Suppression.objects.all()
    assert suppression.reason == Suppression.Reason.COMPLAINT
    [event] = ProviderEvent.objects.all()
    assert (event.event_type, event.error_code) == ("complained", "spam")


@pytest.mark.parametrize(
    ("fixture", "status", "event_type"),
    [("transient", Status.SENT, "deferred"), ("soft_bounce", Status.BOUNCED, "bounced")],
)
def test_deferred_and_soft_bounces_do_not_suppress(sent, webhook, fixture, status, event_type):
    alice, delivery = sent
    body = payload(fixture, MessageID=delivery.provider_message_id, Email=alice.email)
    assert webhook(body).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == status
    assert ProviderEvent.objects.get().event_type == event_type
    assert not Suppression.objects.exists()


def test_opens_are_engagement_not_delivery_reports(sent, webhook):
    """Issue 16: an open is kept and recorded on the notification (a workflow's
    ``opened``); the delivery's status does not move."""
    alice, delivery = sent
    body = payload("open", MessageID=delivery.provider_message_id, Recipient=alice.email)
    assert webhook(body).status_code == 200
    assert ProviderEvent.objects.get().event_type == "opened"
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert delivery.notification.opened_at is not None
    assert delivery.notification.read_at is None


def test_an_esp_unsubscribe_is_recorded_not_suppressed(sent, webhook):
    alice, delivery = sent
    body = payload(
        "subscription_change", MessageID=delivery.provider_message_id, Recipient=alice.email
    )
    assert webhook(body).status_code == 200
    event = ProviderEvent.objects.get()
    assert (event.event_type, event.delivery_id) == ("unsubscribed", delivery.pk)
    assert not Suppression.objects.exists()


def test_a_bounce_for_an_unknown_message_still_suppresses(db, webhook):
    body = payload("hard_bounce", Email="stranger@example.com")
    assert webhook(body).status_code == 200
    event = ProviderEvent.objects.get()
    assert event.delivery is None
    assert event.provider_message_id == body["MessageID"]
    assert is_suppressed("email", "stranger@example.com")


@pytest.mark.parametrize(
    "credentials",
    [None, "postmark:wrong", "intruder:webhook-s3cret", "", SECRET + "x"],
    ids=["missing", "wrong-password", "wrong-user", "empty", "longer"],
)
def test_forged_or_missing_credentials_change_nothing(sent, webhook, credentials):
    alice, delivery = sent
    body = payload("hard_bounce", MessageID=delivery.provider_message_id, Email=alice.email)
    response = webhook(body, credentials=credentials)
    assert response.status_code == 400

    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert not ProviderEvent.objects.exists()
    assert not Suppression.objects.exists()


def test_only_post_is_accepted(sent, webhook, client):
    response = client.get(URL, **basic_auth(SECRET))
    assert response.status_code == 405
    assert not ProviderEvent.objects.exists()


def test_a_bounce_stops_the_next_email_until_ops_lift_it(
    sent, webhook, postmark_email, esp_mailer, client
):
    """Bounce → suppressed → the next email is skipped, never sent → ops lift the
    suppression in admin → the one after is sent again."""
    alice, first = sent
    webhook(payload("hard_bounce", MessageID=first.provider_message_id, Email=alice.email))

    second = postmark_email(alice)
    assert (second.status, second.skip_reason) == (Status.SKIPPED, "suppressed")
    assert len(esp_mailer.messages) == 1  # nothing more reached Postmark

    ops = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops")
    client.force_login(ops)
    suppression = Suppression.objects.get()
    response = client.post(
        reverse("admin:notify_suppression_changelist"),
        {"action": "lift_selected", "_selected_action": [suppression.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 suppression lifted" in response.content.decode()
    suppression.refresh_from_db()
    assert suppression.lifted_at is not None
    assert suppression.lifted_by == ops
    assert "ops" in suppression.lift_reason

    third = postmark_email(alice)
    assert third.status == Status.SENT
    assert len(esp_mailer.messages_to(alice.email)) == 2
    assert third.provider_message_id == esp_mailer.messages[-1].message_id


# -- the mapping alone (no database) ------------------------------------------------------


def report_for(data: dict[str, Any]):
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView

    from notify.webhooks.anymail import report_from_event

    event = PostmarkTrackingWebhookView(webhook_secret=SECRET).esp_to_anymail_event(data)
    return report_from_event(event, "Postmark")


@pytest.mark.parametrize(
    ("fixture", "fields", "event_type", "suppress"),
    [
        ("delivery", {}, "delivered", ""),
        ("hard_bounce", {}, "bounced", "hard_bounce"),
        ("soft_bounce", {}, "bounced", ""),
        ("transient", {}, "deferred", ""),
        ("hard_bounce", {"Type": "DnsError", "TypeCode": 16}, "deferred", ""),
        ("hard_bounce", {"Type": "BadEmailAddress", "TypeCode": 100000}, "rejected", "invalid"),
        ("hard_bounce", {"Type": "Blocked", "TypeCode": 100006}, "rejected", ""),
        ("hard_bounce", {"Type": "SMTPApiError", "TypeCode": 100007}, "failed", ""),
        ("spam_complaint", {}, "complained", "complaint"),
        ("hard_bounce", {"Type": "SpamNotification", "TypeCode": 512}, "complained", "complaint"),
        ("subscription_change", {}, "unsubscribed", ""),
        ("subscription_change", {"SuppressionReason": "HardBounce"}, "bounced", "hard_bounce"),
        ("subscription_change", {"SuppressionReason": "SpamComplaint"}, "complained", "complaint"),
    ],
)
def test_postmark_events_map_to_reports(fixture, fields, event_type, suppress):
    body = payload(fixture, **fields)
    report = report_for(body)
    assert report.provider == "postmark"
    assert report.event_type == event_type
    assert report.message_id == body["MessageID"]
    assert report.suppress_reason == suppress
    assert report.suppress_kind == ("email" if suppress else "")
    assert report.recipient == body.get("Email", body.get("Recipient"))
    assert report.payload == body


def test_engagement_events_are_reported_as_engagement():
    assert report_for(payload("open")).event_type == "opened"
    assert report_for(payload("subscription_change", SuppressSending=False)) is None


@pytest.mark.parametrize("secret", [None, "", []], ids=["unset", "empty", "empty-list"])
def test_without_credentials_configured_a_forged_bounce_is_refused(sent, client, settings, secret):
    """Issue 13: no NOTIFY_WEBHOOK_BASIC_AUTH must mean closed, not open."""
    anymail = {k: v for k, v in getattr(settings, "ANYMAIL", {}).items() if k != "WEBHOOK_SECRET"}
    if secret is not None:
        anymail["WEBHOOK_SECRET"] = secret
    settings.ANYMAIL = anymail
    alice, delivery = sent
    body = payload("hard_bounce", MessageID=delivery.provider_message_id, Email=alice.email)
    for headers in ({}, basic_auth("anyone:anything")):
        response = client.post(
            URL, data=json.dumps(body), content_type="application/json", **headers
        )
        assert response.status_code == 403
        assert b"NOTIFY_WEBHOOK_BASIC_AUTH" in response.content
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert not ProviderEvent.objects.exists()
    assert not Suppression.objects.exists()
    assert not is_suppressed("email", alice.email)


def test_the_system_check_says_what_to_set_when_an_esp_is_configured(settings):
    from notify.webhooks.anymail import check_webhook_secret

    settings.DEBUG = False
    settings.ANYMAIL = {}
    settings.MAILERS = {
        **settings.MAILERS,
        "postmark": {"BACKEND": "anymail.backends.postmark.EmailBackend"},
    }
    [warning] = check_webhook_secret()
    assert warning.id == "notify.W101"
    assert "NOTIFY_WEBHOOK_BASIC_AUTH" in warning.hint
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    assert check_webhook_secret() == []
