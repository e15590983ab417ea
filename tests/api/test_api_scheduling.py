"""Scheduling over HTTP: ``scheduled_for`` on ``POST /api/v1/events`` and
``DELETE /api/v1/events/by-key/<key>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import time_machine

from notify.models import ApiKey, Delivery, Event
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.api.test_api import ORDER, get_event, post_event

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def token(db):
    return ApiKey.issue("shop")[1]


def delete_by_key(client, token, key):
    return client.delete(
        f"/api/v1/events/by-key/{quote(key)}", headers={"Authorization": f"Bearer {token}"}
    )


@pytest.fixture
def alice_order(make_rule, make_user):
    alice = make_user("alice")
    make_rule(channels=["email"])
    return {**ORDER, "recipients": [alice.pk]}


def test_a_scheduled_event_is_accepted_and_fanned_out_when_due(
    client, token, alice_order, clock, smtp_mailer
):
    body = {**alice_order, "scheduled_for": "2026-11-20T15:00:00+01:00"}
    response = post_event(client, token, body, idempotency_key="k1")
    assert response.status_code == 202, response.content
    assert response.json()["scheduled_for"] == "2026-11-20T14:00:00Z"
    event = Event.objects.get()
    assert event.scheduled_for == datetime(2026, 11, 20, 14, tzinfo=UTC)
    run_until_idle()
    assert get_event(client, token, event.pk).json()["status"] == "received"
    clock.move_to(datetime(2026, 11, 20, 14, tzinfo=UTC))
    run_until_idle()
    detail = get_event(client, token, event.pk).json()
    assert detail["status"] == "processed"
    assert detail["scheduled_for"] == "2026-11-20T14:00:00Z"
    [notification] = detail["notifications"]
    assert notification["deliveries"][0]["status"] == Status.SENT
    assert notification["deliveries"][0]["hold_reason"] == ""
    assert len(smtp_mailer.messages) == 1


def test_a_retry_with_the_same_key_and_time_is_the_same_event(client, token):
    body = {**ORDER, "scheduled_for": "2026-11-21T09:00:00Z"}
    first = post_event(client, token, body, idempotency_key="k2")
    second = post_event(client, token, body, idempotency_key="k2")
    assert first.content == second.content
    other_time = post_event(
        client, token, {**body, "scheduled_for": "2026-11-21T10:00:00Z"}, idempotency_key="k2"
    )
    assert other_time.status_code == 422
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-20T11:00:00Z", "is in the past"),
        ("2027-12-01T00:00:00Z", "is more than a year ahead"),
        ("2026-11-21T09:00:00", "needs a UTC offset"),
        ("tomorrow", "not an ISO 8601 date-time"),
        (1763731200, "must be an ISO 8601 date-time string"),
    ],
)
def test_a_bad_scheduled_for_is_a_400_naming_the_field(client, token, value, message):
    response = post_event(client, token, {**ORDER, "scheduled_for": value})
    assert response.status_code == 400
    data = response.json()
    assert data["errors"][0]["field"] == "scheduled_for"
    assert message in data["errors"][0]["message"]
    assert data["message"].startswith("scheduled_for: ")
    assert not Event.objects.exists()


def test_delete_by_key_cancels_a_scheduled_event(client, token, alice_order, clock):
    key = "reminder/order A1"  # any printable key, a slash and a space included
    body = {**alice_order, "scheduled_for": "2026-11-21T09:00:00Z"}
    assert post_event(client, token, body, idempotency_key=key).status_code == 202
    response = delete_by_key(client, token, key)
    assert response.status_code == 200, response.content
    event = Event.objects.get()
    assert response.json() == {
        "id": event.pk,
        "status": "cancelled",
        "event_cancelled": True,
        "deliveries_cancelled": 0,
        "runs_cancelled": 0,
    }
    assert delete_by_key(client, token, key).status_code == 200  # again: harmless
    clock.move_to(datetime(2026, 11, 21, 10, tzinfo=UTC))
    run_until_idle()
    assert Event.objects.get().status == Event.State.CANCELLED
    assert not Delivery.objects.exists()


def test_delete_by_key_cancels_the_pending_deliveries_of_a_reminder(
    client, token, make_rule, make_user
):
    alice = make_user("alice")
    make_rule(channels=["email", "inapp"], delay=timedelta(hours=2))
    post_event(client, token, {**ORDER, "recipients": [alice.pk]}, idempotency_key="k3")
    run_until_idle()
    response = delete_by_key(client, token, "k3")
    assert response.status_code == 200
    assert response.json()["deliveries_cancelled"] == 2
    assert response.json()["event_cancelled"] is False
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.CANCELLED}


def test_delete_by_key_404_for_unknown_or_another_keys_event(client, token):
    assert delete_by_key(client, token, "nope").status_code == 404
    other = ApiKey.issue("other")[1]
    post_event(
        client, other, {**ORDER, "scheduled_for": "2026-11-21T09:00:00Z"}, idempotency_key="x"
    )
    response = delete_by_key(client, token, "x")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert Event.objects.get().status == Event.State.RECEIVED


def test_delete_by_key_409_when_already_sent(client, token, alice_order, smtp_mailer):
    post_event(client, token, alice_order, idempotency_key="k4")
    run_until_idle()
    response = delete_by_key(client, token, "k4")
    assert response.status_code == 409
    assert response.json()["error"] == "already_sent"


def test_delete_needs_an_api_key_and_other_methods_are_405(client, token):
    assert client.delete("/api/v1/events/by-key/k").status_code == 401
    response = client.get("/api/v1/events/by-key/k", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405
    assert response["Allow"] == "DELETE"
