"""``POST /api/v1/events/batch``: per-item results and keys, whole-request 400s
that store nothing, per-item errors that do not block the valid items, one
transaction that never reports an item it did not store."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta

import pytest
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify.intake import batch as intake_batch
from notify.models import ApiKey, Event
from notify.runtime.worker import run_until_idle

BATCH = "/api/v1/events/batch"
EVENTS = "/api/v1/events"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def token(db):
    return ApiKey.issue("shop")[1]


def post_batch(client, token, body, *, raw=None, **extra):
    data = raw if raw is not None else json.dumps(body)
    extra.setdefault("content_type", "application/json")
    return client.post(BATCH, data, headers={"Authorization": f"Bearer {token}"}, **extra)


def order(n, **extra):
    return {"type": "order.shipped", "payload": {"order_id": f"A{n}"}, **extra}


def test_a_batch_is_stored_and_each_item_answered_in_order(client, token):
    body = {"events": [order(n, idempotency_key=f"k{n}") for n in range(3)]}

    response = post_batch(client, token, body)

    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["accepted"], data["duplicate"], data["error"]) == (3, 0, 0)
    events = list(Event.objects.order_by("pk"))
    assert [e.payload["order_id"] for e in events] == ["A0", "A1", "A2"]
    assert data["results"] == [
        {"index": n, "status": "accepted", "id": events[n].pk} for n in range(3)
    ]
    assert {e.source for e in events} == {Event.Source.API}
    assert [e.idempotency_key for e in events] == ["k0", "k1", "k2"]


def test_a_thousand_events_go_in_one_request(client, token):
    body = {"events": [order(n) for n in range(1000)]}

    response = post_batch(client, token, body)

    assert response.status_code == 200, response.content[:500]
    assert response.json()["accepted"] == 1000
    assert Event.objects.count() == 1000


def test_a_retried_batch_answers_duplicate_with_the_first_ids(client, token):
    body = {"events": [order(n, idempotency_key=f"k{n}") for n in range(3)]}
    first = post_batch(client, token, body).json()

    again = post_batch(client, token, body).json()

    assert Event.objects.count() == 3
    assert (again["accepted"], again["duplicate"]) == (0, 3)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert {r["status"] for r in again["results"]} == {"duplicate"}


def test_keys_are_shared_with_the_single_endpoint(client, token):
    single = client.post(
        EVENTS,
        json.dumps(order(1)),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "shared"},
    )
    assert single.status_code == 202

    data = post_batch(
        client, token, {"events": [order(1, idempotency_key="shared"), order(2)]}
    ).json()

    assert data["results"][0] == {"index": 0, "status": "duplicate", "id": single.json()["id"]}
    assert data["results"][1]["status"] == "accepted"
    assert Event.objects.count() == 2


def test_a_key_reused_for_another_event_is_that_items_error(client, token):
    post_batch(client, token, {"events": [order(1, idempotency_key="k")]})

    data = post_batch(client, token, {"events": [order(2, idempotency_key="k"), order(3)]}).json()

    assert data["results"][0]["status"] == "error"
    assert data["results"][0]["error"] == "idempotency_key_reused"
    assert data["results"][0]["errors"][0]["field"] == "events[0].idempotency_key"
    assert data["results"][1]["status"] == "accepted"
    assert sorted(e.payload["order_id"] for e in Event.objects.all()) == ["A1", "A3"]


def test_bad_items_are_answered_and_the_valid_ones_stored(client, token, make_user):
    alice = make_user("alice")
    body = {
        "events": [
            order(0, actor=alice.pk),
            {"type": "Not A Type", "payload": {}},
            order(2, actor=999_999),
            {"type": "order.shipped", "payload": "not an object"},
            order(4, recipients=["not-an-address"]),
            order(5, unknown=1),
            order(6, idempotency_key="bad\nkey"),
            order(7),
        ]
    }

    response = post_batch(client, token, body)

    assert response.status_code == 200, response.content
    data = response.json()
    results = data["results"]
    assert [r["status"] for r in results] == ["accepted"] + ["error"] * 6 + ["accepted"]
    fields = [r["errors"][0]["field"] for r in results if r["status"] == "error"]
    assert fields == [
        "events[1].type",
        "events[2].actor",
        "events[3].payload",
        "events[4].recipients[0]",
        "events[5].unknown",
        "events[6].idempotency_key",
    ]
    assert "no user with id 999999" in results[2]["message"]
    assert results[2]["message"].startswith("events[2].actor:")
    assert sorted(e.payload["order_id"] for e in Event.objects.all()) == ["A0", "A7"]
    assert (data["accepted"], data["error"]) == (2, 6)


def test_an_oversized_payload_is_that_items_error(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_MAX_PAYLOAD_BYTES": 100}
    body = {"events": [order(0, payload={"x": "y" * 200}), order(1)]}

    results = post_batch(client, token, body).json()["results"]

    assert results[0]["errors"] == [
        {"field": "events[0].payload", "message": "over the limit of 100 bytes as JSON"}
    ]
    assert results[1]["status"] == "accepted"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "events", "required"),
        ({"events": "x"}, "events", "must be a list of events, not str"),
        ({"events": {"type": "a"}}, "events", "must be a list of events, not dict"),
        ({"events": []}, "events", "is empty"),
        ({"events": [order(n) for n in range(1001)]}, "events", "1001 events: at most 1000"),
        ({"events": [order(0), "nope"]}, "events[1]", "must be a JSON object, not str"),
        ({"events": [order(0), None]}, "events[1]", "must be a JSON object, not NoneType"),
        ({"events": [order(0)], "extra": 1}, "extra", "unknown field"),
        (
            {"events": [order(0, idempotency_key="k"), order(1, idempotency_key="k")]},
            "events[1].idempotency_key",
            "also the key of events[0]",
        ),
    ],
)
def test_a_bad_request_is_a_400_naming_it_and_stores_nothing(client, token, body, field, words):
    response = post_batch(client, token, body)

    assert response.status_code == 400, response.content
    data = response.json()
    assert data["error"] == "invalid_request"
    assert data["errors"][0]["field"] == field
    assert words in data["message"]
    assert Event.objects.count() == 0


def test_a_body_that_is_not_an_object_is_a_400(client, token):
    response = post_batch(client, token, None, raw="[1, 2]")

    assert response.status_code == 400
    assert "must be a JSON object, not list" in response.json()["message"]
    assert Event.objects.count() == 0


def test_a_body_over_the_batch_limit_is_a_413(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_MAX_BATCH_BODY_BYTES": 1000}

    response = post_batch(client, token, {"events": [order(n) for n in range(50)]})

    assert response.status_code == 413
    assert Event.objects.count() == 0


def test_auth_is_required_as_on_the_single_endpoint(client, db):
    response = client.post(
        BATCH, json.dumps({"events": [order(0)]}), content_type="application/json"
    )

    assert response.status_code == 401
    assert Event.objects.count() == 0


def test_a_batch_counts_as_one_request_against_the_rate_limit(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_RATE_LIMIT_PER_KEY": "2/m"}
    body = {"events": [order(n) for n in range(10)]}

    statuses = [post_batch(client, token, body).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert Event.objects.count() == 20


def test_only_get_and_post_are_refused_clearly(client, token):
    response = client.get(BATCH, headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_accepted_events_are_fanned_out(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "EAGER": False}
    post_batch(client, token, {"events": [order(n) for n in range(5)]})
    assert set(Event.objects.values_list("status", flat=True)) == {Event.State.RECEIVED}

    run_until_idle()

    assert set(Event.objects.values_list("status", flat=True)) == {Event.State.PROCESSED}


@pytest.mark.django_db(transaction=True)
def test_a_collision_with_a_concurrent_request_is_retried_and_never_lost(monkeypatch):
    """A concurrent request stores one of the batch's keys after the batch looked
    its keys up: the insert is refused, the whole transaction rolls back and is
    tried again, and that item is answered duplicate with the other request's
    event; the rest are stored exactly once."""
    _, token = ApiKey.issue("racing")
    body = {"events": [order(n, idempotency_key=f"k{n}") for n in range(3)]}
    rival = client_post_single(token, order(1), "k1")
    real = intake_batch.known_keys
    lookups = []

    def known_keys(scope, keys):
        lookups.append(keys)
        # The first lookup ran before the rival committed: it saw nothing.
        return {} if len(lookups) == 1 else real(scope, keys)

    monkeypatch.setattr(intake_batch, "known_keys", known_keys)

    response = post_batch(Client(), token, body)

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "duplicate", "accepted"]
    assert results[1]["id"] == rival
    assert len(lookups) == 2
    assert sorted(Event.objects.values_list("idempotency_key", flat=True)) == ["k0", "k1", "k2"]
    assert {r["id"] for r in results} == set(Event.objects.values_list("pk", flat=True))


def client_post_single(token, body, key):
    response = Client().post(
        EVENTS,
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
    )
    assert response.status_code == 202
    return response.json()["id"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_keys_store_each_event_once():
    _, token = ApiKey.issue("concurrent")
    body = {"events": [order(n, idempotency_key=f"k{n}") for n in range(50)]}
    barrier = threading.Barrier(4)

    def send(_):
        try:
            barrier.wait(timeout=30)
            return post_batch(Client(), token, body).json()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(send, range(4)))

    assert Event.objects.count() == 50
    ids = {r["id"] for answer in answers for r in answer["results"]}
    assert ids == set(Event.objects.values_list("pk", flat=True))
    assert sum(answer["accepted"] for answer in answers) == 50


def test_the_batch_endpoint_is_in_the_openapi_document(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    operation = doc["paths"]["/api/v1/events/batch"]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "429"}
    schemas = doc["components"]["schemas"]
    assert schemas["BatchIn"]["properties"]["events"]["maxItems"] == 1000
    assert "idempotency_key" in schemas["BatchEventIn"]["properties"]
    assert schemas["BatchEventIn"]["additionalProperties"] is False


# -- bulk idempotency and the rows as stored ------------------------------------------


def _batch_queries(client, token, body):
    with CaptureQueriesContext(connections["default"]) as queries:
        response = post_batch(client, token, body)
    assert response.status_code == 200, response.content[:500]
    return response.json(), [q["sql"] for q in queries if 'notify_event"' in q["sql"]]


def test_a_partly_replayed_batch_resolves_its_keys_in_one_query(client, token):
    first = {"events": [order(n, idempotency_key=f"k{n}") for n in range(0, 1000, 2)]}
    stored = post_batch(client, token, first).json()
    first_ids = {r["index"] * 2: r["id"] for r in stored["results"]}
    # Every even key again (same requests), every odd one new, and ten without a key.
    replay = [order(n, idempotency_key=f"k{n}") for n in range(990)] + [
        order(n) for n in range(990, 1000)
    ]

    data, event_sql = _batch_queries(client, token, {"events": replay})

    assert (data["accepted"], data["duplicate"], data["error"]) == (505, 495, 0)
    for result in data["results"]:
        index = result["index"]
        if index < 990 and index % 2 == 0:
            assert result == {"index": index, "status": "duplicate", "id": first_ids[index]}
        else:
            assert result["status"] == "accepted"
    # One look-up of the 990 keys and one INSERT of the 505 new rows, whatever the size.
    assert len(event_sql) == 2, event_sql
    assert Event.objects.count() == 500 + 505
    assert Event.objects.filter(idempotency_key="k2").count() == 1


def test_a_replay_with_another_body_under_a_known_key_is_only_that_items_error(client, token):
    post_batch(client, token, {"events": [order(n, idempotency_key=f"k{n}") for n in range(3)]})

    changed = [order(0, idempotency_key="k0"), order(99, idempotency_key="k1"), order(2)]
    data = post_batch(client, token, {"events": changed}).json()

    assert [r["status"] for r in data["results"]] == ["duplicate", "error", "accepted"]
    assert data["results"][1]["errors"] == [
        {"field": "events[1].idempotency_key", "message": "already used"}
    ]
    assert Event.objects.count() == 4


def test_stored_rows_read_back_as_the_request_said(client, token, make_user):
    actor = make_user("ann")
    when = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    item = {
        "type": "order.shipped",
        "payload": {"name": "Zoë ✓", "n": 1.5, "nested": {"list": [1, None, True]}},
        "actor": actor.pk,
        "recipients": [actor.pk, "bob@example.com"],
        "scheduled_for": when.astimezone(UTC).isoformat(),
        "idempotency_key": "full",
    }

    data = post_batch(client, token, {"events": [item]}).json()

    event = Event.objects.get(pk=data["results"][0]["id"])
    assert event.payload == item["payload"]
    assert event.actor_id == actor.pk
    assert event.recipients == [actor.pk, "bob@example.com"]
    assert event.scheduled_for == when
    assert event.source == Event.Source.API
    assert event.status == Event.State.RECEIVED
    assert (event.tags, event.attempts, event.error, event.object_ref) == ([], 0, "", "")
    assert abs((timezone.now() - event.received_at).total_seconds()) < 60
    assert event.idempotency_scope == f"api:{event.api_key_id}"
