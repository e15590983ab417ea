"""End to end: a deleted row reaches a third party's receiver as signed JSON data.

Nothing is mocked: an admin signal binding turns ``User`` deletes into
``user.deleted`` events (a field allow-list, secrets never), the worker fans
the event out through a ``webhook`` rule to a service user's webhook contact
point, and the signed webhook channel posts it over http to the local
receiver, reachable because ``INTERNAL_HOSTS`` (``NOTIFY_WEBHOOK_INTERNAL_HOSTS``)
names 127.0.0.1. The receiver verifies the HMAC signature; the test then reads
the row's fields as JSON data under ``data.object`` and checks the body against
the published schema.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from channels.webhook import verify_signature
from notify.delivery.message import event_data
from notify.delivery.rendering import template_store
from notify.models import Category, ContactPoint, Delivery, DeliveryAttempt, Event
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from rules.models import Rule, SignalBinding
from tests.json_schema import errors

User = get_user_model()
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "webhook-payload.schema.json").read_text())
SECRET = "whsec-e2e-0b7c"
FIELDS = ["username", "email", "first_name", "last_name", "is_active", "date_joined"]


@pytest.fixture
def signed_webhooks(settings):
    """The real signed webhook channel, allowed to reach the local receiver by
    naming it as an internal host (no ALLOW_HTTP, no ALLOWED_HOSTS)."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "webhook": {
                "BACKEND": "channels.webhook.SignedWebhookChannel",
                "OPTIONS": {"SECRET": SECRET, "INTERNAL_HOSTS": ["127.0.0.1"], "TIMEOUT": 5},
            },
        },
    }


@pytest.fixture
def chat_part(settings, tmp_path):
    """A message folder with a chat part, in front of the shipped templates."""
    folder = tmp_path / "templates" / "user_deleted_sync"
    folder.mkdir(parents=True)
    (folder / "chat").write_text("User {{ payload.object.username }} was deleted.\n")
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(tmp_path / "templates"), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    yield
    template_store.refresh(force=True)


@pytest.fixture
def crm_sync(db, webhook_peer, signed_webhooks, make_user):
    """A binding of User deletes, a webhook rule and the CRM's service user."""
    SignalBinding.objects.create(
        content_type=ContentType.objects.get_for_model(User),
        signal="deleted",
        event_type="user.deleted",
        payload_fields=FIELDS,
    )
    crm = make_user("crm-sync")
    url = webhook_peer.add_endpoint("signed", secret=SECRET)
    ContactPoint.objects.create(
        user=crm, kind=ContactPoint.Kind.WEBHOOK, address=url, verified_at=timezone.now()
    )
    Rule.objects.create(
        name="sync deleted users to the CRM",
        event_type="user.deleted",
        category=Category.objects.create(key="sync", name="Sync"),
        recipients=[f"users:{crm.pk}"],
        channels=["webhook"],
        message="user_deleted_sync",  # no template: data-only unless chat_part adds one
    )
    return crm, url


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("template", ["data-only", "with chat part"])
def test_a_deleted_row_reaches_the_receiver_as_signed_json_data(
    request, template, crm_sync, webhook_peer, make_user
):
    if template == "with chat part":
        request.getfixturevalue("chat_part")
    crm, url = crm_sync
    gone = make_user("mallory", first_name="Mallory", last_name="M.", email="m@example.com")
    stored = {f: getattr(gone, f) for f in FIELDS}
    gone_pk = gone.pk
    gone.delete()
    run_until_idle()

    event = Event.objects.get(type="user.deleted")
    delivery = Delivery.objects.get(notification__event=event)
    assert delivery.status == Status.SENT, delivery.error_message
    assert (delivery.notification.user, delivery.channel) == (crm, "webhook")

    # The receiver took it only because the signature verified with its secret.
    [got] = webhook_peer.accepted
    assert got.url == url
    raw, headers = got.request.body, got.request
    timestamp = headers.header("x-notify-timestamp")
    signature = headers.header("x-notify-signature")
    assert verify_signature(SECRET, timestamp, raw, signature)
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    assert signature == f"v1={expected.hexdigest()}"
    assert not verify_signature("another-secret", timestamp, raw, signature)

    body = json.loads(raw)
    assert errors(body, SCHEMA) == []
    assert body["id"] == delivery.pk == int(got.delivery)  # de-duplicate by it

    # The row's fields, as JSON data: the allow-list, no password, no other field.
    assert body["data"]["model"] == "auth.user"
    assert body["data"]["pk"] == gone_pk
    assert body["data"]["object"] == {
        "username": "mallory",
        "email": "m@example.com",
        "first_name": "Mallory",
        "last_name": "M.",
        "is_active": True,
        "date_joined": body["data"]["object"]["date_joined"],
    }
    joined = datetime.fromisoformat(body["data"]["object"]["date_joined"])
    assert abs(joined - stored["date_joined"]) < timedelta(milliseconds=1)  # JSON keeps ms
    assert "password" not in raw.decode()
    assert body["data"] == event.payload  # the payload as stored

    assert body["event"] == {
        "id": event.pk,
        "type": "user.deleted",
        "occurred_at": body["event"]["occurred_at"],
        "actor_id": None,
    }
    assert datetime.fromisoformat(body["event"]["occurred_at"]) == event.received_at

    if template == "data-only":  # no template needed: empty subject and text
        assert (body["subject"], body["text"]) == ("", "")
    else:
        assert body["text"] == "User mallory was deleted."

    [attempt] = delivery.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.SENT
    assert run_until_idle() == 0  # nothing goes twice
    assert len(webhook_peer.accepted) == 1


@pytest.mark.django_db(transaction=True)
def test_a_chat_rule_without_its_template_still_fails_template_missing(
    crm_sync, webhook_peer, make_user
):
    """Only the webhook format is data-only: a Slack message needs its text."""
    rule = Rule.objects.get()
    rule.channels = ["chat"]
    rule.save()
    slack_user = make_user("slack-user")
    ContactPoint.objects.create(
        user=slack_user, kind=ContactPoint.Kind.SLACK, address="U123", verified_at=timezone.now()
    )
    rule.recipients = [f"users:{slack_user.pk}"]
    rule.save()
    make_user("gone").delete()
    run_until_idle()
    delivery = Delivery.objects.get(channel="chat")
    assert delivery.status in {Status.FAILED, Status.DEAD}
    assert "has no 'chat' part" in delivery.error_message
    assert webhook_peer.accepted == []


def test_event_data_names_the_actor_and_a_sortable_utc_time(db, make_user):
    actor = make_user("ops")
    event = Event.objects.create(
        type="order.shipped",
        payload={"order_id": "A1"},
        actor=actor,
        received_at=datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Paris")),
    )
    extra = event_data(Event.objects.get(pk=event.pk))
    assert extra["event"] == {
        "id": event.pk,
        "type": "order.shipped",
        "occurred_at": "2026-03-02T09:00:00.000000+00:00",  # fixed width: sorts as text
        "actor_id": actor.pk,
    }
    assert extra["data"] == {"order_id": "A1"}
