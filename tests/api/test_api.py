"""The events API: auth, validation that stores nothing, idempotency (also under
concurrency), the event detail with its deliveries, 405/404 JSON, OpenAPI."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from notify.api import urls as api_urls
from notify.api.auth import forget_api_keys
from notify.intake import trigger as events
from notify.models import ApiKey, Event
from notify.models.status import Status
from notify.runtime.worker import run_until_idle

EVENTS = "/api/v1/events"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """make_user hashes a password; the production hasher takes ~1 s per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api_key(db):
    return ApiKey.issue("shop")


@pytest.fixture
def token(api_key):
    return api_key[1]


def post_event(client, token, body, *, idempotency_key=None, raw=None, **extra):
    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    data = raw if raw is not None else json.dumps(body)
    extra.setdefault("content_type", "application/json")
    return client.post(EVENTS, data, headers=headers, **extra)


def get_event(client, token, event_id):
    return client.get(f"{EVENTS}/{event_id}", headers={"Authorization": f"Bearer {token}"})


ORDER = {"type": "order.shipped", "payload": {"order_id": "A1", "total": 150}}


# -- accepting --------------------------------------------------------------------


def test_post_event_is_stored_and_accepted(client, api_key, make_user):
    key, token = api_key
    alice = make_user("alice")
    body = {**ORDER, "actor": alice.pk, "recipients": [alice.pk, "bob@example.com"]}

    response = post_event(client, token, body)

    assert response.status_code == 202, response.content
    data = response.json()
    event = Event.objects.get()
    assert data == {
        "id": event.pk,
        "status": "accepted",
        "type": "order.shipped",
        "received_at": data["received_at"],
    }
    assert data["received_at"].startswith(event.received_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert response["Location"] == f"/api/v1/events/{event.pk}"
    assert event.source == Event.Source.API
    assert event.api_key == key
    assert event.payload == ORDER["payload"]
    assert event.actor == alice
    assert event.recipients == [alice.pk, "bob@example.com"]
    assert event.idempotency_scope == f"api:{key.pk}"
    assert event.idempotency_key is None
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_minimal_body_defaults(client, token):
    response = post_event(client, token, {"type": "user.signed_up"})
    assert response.status_code == 202
    event = Event.objects.get()
    assert (event.payload, event.actor, event.recipients) == ({}, None, [])


def test_same_idempotency_key_twice_stores_one_event(client, token):
    first = post_event(client, token, ORDER, idempotency_key="order-A1-shipped")
    second = post_event(client, token, ORDER, idempotency_key="order-A1-shipped")

    assert first.status_code == second.status_code == 202
    assert first.content == second.content
    assert first["Location"] == second["Location"]
    assert Event.objects.count() == 1
    assert Event.objects.get().idempotency_key == "order-A1-shipped"


def test_key_order_in_payload_does_not_make_a_different_request(client, token):
    body = '{"type": "order.shipped", "payload": {"a": 1, "b": 2}}'
    reordered = '{"payload": {"b": 2, "a": 1}, "type": "order.shipped"}'
    first = post_event(client, token, None, raw=body, idempotency_key="k")
    second = post_event(client, token, None, raw=reordered, idempotency_key="k")
    assert first.content == second.content
    assert Event.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_refused(client, token):
    post_event(client, token, ORDER, idempotency_key="k1")
    changed = {**ORDER, "payload": {"order_id": "A2", "total": 150}}

    response = post_event(client, token, changed, idempotency_key="k1")

    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert "k1" in response.json()["message"]
    assert Event.objects.count() == 1
    assert Event.objects.get().payload["order_id"] == "A1"


def test_idempotency_keys_are_scoped_per_api_key(client, token):
    _, other_token = ApiKey.issue("billing")
    a = post_event(client, token, ORDER, idempotency_key="same")
    b = post_event(client, other_token, ORDER, idempotency_key="same")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    assert Event.objects.count() == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [("x" * 256, "255"), ("tab\there", "printable"), ("", "1 to 255")],
)
def test_bad_idempotency_key_header(client, token, value, problem):
    response = post_event(client, token, ORDER, idempotency_key=value)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "Idempotency-Key"
    assert problem in error["message"]
    assert Event.objects.count() == 0


def _concurrently(n, request):
    """Run ``request(i)`` in ``n`` threads released together; each closes its DB
    connection, since the test client leaves it open."""
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait(timeout=30)
            return request(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def _hold_lookups_until_all_looked(monkeypatch, n):
    """Hold the first ``n`` threads just before their insert (trigger()
    fingerprints the request, then inserts, and looks the key up only when the
    unique constraint refuses it) until all ``n`` got there, so they race to
    insert: the losers must take the IntegrityError path in trigger() and
    answer as the winner did. Held outside the transaction (on SQLite a thread
    inside one would keep the others from starting theirs), and at most 12 at
    once: each holds a connection, and PostgreSQL's pool lends 20 by default."""
    real = events.request_fingerprint
    n = min(n, 12)
    gate = threading.Barrier(n)
    arrived = {"count": 0}
    lock = threading.Lock()
    seen = threading.local()

    def request_fingerprint(*args, **kwargs):
        if not getattr(seen, "held", False):
            seen.held = True
            with lock:
                arrived["count"] += 1
                held = arrived["count"] <= n
            if held:
                gate.wait(timeout=30)
        return real(*args, **kwargs)

    monkeypatch.setattr(events, "request_fingerprint", request_fingerprint)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("forced_race", [False, True], ids=["natural", "forced-race"])
def test_fifty_concurrent_requests_with_one_key_store_one_event(monkeypatch, forced_race):
    _, token = ApiKey.issue("concurrent")
    if forced_race:
        _hold_lookups_until_all_looked(monkeypatch, 50)

    def send(_):
        response = post_event(Client(), token, ORDER, idempotency_key="burst")
        return response.status_code, response.content

    answers = _concurrently(50, send)

    assert Event.objects.count() == 1
    event = Event.objects.get()
    assert {status for status, _ in answers} == {202}
    assert len({content for _, content in answers}) == 1
    assert json.loads(answers[0][1])["id"] == event.pk


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_and_two_bodies_store_one_event(monkeypatch):
    """Whichever body wins, the others hear 422, even though they lost the race
    inside trigger() rather than finding the event beforehand."""
    _, token = ApiKey.issue("racing")
    _hold_lookups_until_all_looked(monkeypatch, 20)
    bodies = [ORDER, {**ORDER, "payload": {"order_id": "B2"}}]

    def send(i):
        body = bodies[i % 2]
        response = post_event(Client(), token, body, idempotency_key="race")
        return body, response.status_code, response.content

    answers = _concurrently(20, send)

    event = Event.objects.get()
    for body, status, content in answers:
        if body["payload"] == event.payload:
            assert status == 202
            assert json.loads(content)["id"] == event.pk
        else:
            assert status == 422
            assert json.loads(content)["error"] == "idempotency_key_reused"


# -- auth -------------------------------------------------------------------------


def _assert_unauthorized(response):
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Event.objects.count() == 0


def test_missing_key_is_401(client, db):
    _assert_unauthorized(client.post(EVENTS, json.dumps(ORDER), content_type="application/json"))


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwdw==", "Bearer", "Bearer nfy_", "Bearer not-a-token", "Bearer nfy_abc"],
)
def test_malformed_authorization_is_401(client, db, header):
    response = client.post(
        EVENTS,
        json.dumps(ORDER),
        content_type="application/json",
        headers={"Authorization": header},
    )
    _assert_unauthorized(response)


def test_wrong_secret_is_401(client, api_key):
    key, token = api_key
    _assert_unauthorized(post_event(client, token[:-2] + "xx", ORDER))
    _assert_unauthorized(post_event(client, f"nfy_000000000000_{token.split('_', 2)[2]}", ORDER))
    key.refresh_from_db()
    assert key.last_used_at is None


def test_revoked_key_is_401(client, api_key):
    key, token = api_key
    key.revoked_at = timezone.now()
    key.save()
    response = post_event(client, token, ORDER)
    _assert_unauthorized(response)
    assert "revoked" in response.json()["message"]


def test_last_used_at_is_written_at_most_once_a_minute(client, api_key):
    key, token = api_key
    recent = timezone.now() - timedelta(seconds=30)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=recent)
    post_event(client, token, ORDER)
    key.refresh_from_db()
    assert key.last_used_at == recent

    stale = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=stale)
    forget_api_keys()  # as a request after API_KEY_CACHE_SECONDS reads the key again
    post_event(client, token, ORDER)
    key.refresh_from_db()
    assert key.last_used_at > stale


# -- bad input stores nothing ---------------------------------------------------------


def _assert_invalid(response, field):
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["error"] == "invalid_request"
    assert data["message"]
    assert field in [error["field"] for error in data["errors"]], data
    assert Event.objects.count() == 0
    return data


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"type": "order.shipped",', "body"),
        (" ", "body"),
        ('["order.shipped"]', "body"),
        ('"order.shipped"', "body"),
        ('{"type": "order.shipped", "payload": {"x": NaN}}', "body"),
        ('{"type": "order.shipped", "payload": {"x": 1e999}}', "body"),
        ('{"type": "order.shipped", "payload": {"x": Infinity}}', "body"),
        ("[" * 100_000 + "]" * 100_000, "body"),
        (b'{"type": "order.shipped\xff"}', "body"),
    ],
)
def test_unparseable_body_is_400(client, token, raw, field):
    _assert_invalid(post_event(client, token, None, raw=raw), field)


def test_empty_body_is_400(client, token):
    response = post_event(client, token, None, raw="", CONTENT_TYPE="application/json")
    _assert_invalid(response, "body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {}}, "type"),
        ({**ORDER, "priority": "high"}, "priority"),
        ({"type": 5}, "type"),
        ({"type": None}, "type"),
        ({"type": "Order Shipped"}, "type"),
        ({"type": "order..shipped"}, "type"),
        ({"type": "a" * 201}, "type"),
        ({"type": "order.shipped", "payload": []}, "payload"),
        ({"type": "order.shipped", "payload": "x"}, "payload"),
        ({"type": "order.shipped", "payload": None}, "payload"),
        ({"type": "order.shipped", "actor": "1"}, "actor"),
        ({"type": "order.shipped", "actor": True}, "actor"),
        ({"type": "order.shipped", "actor": 1.5}, "actor"),
        ({"type": "order.shipped", "actor": 0}, "actor"),
        ({"type": "order.shipped", "actor": 2**70}, "actor"),
        ({"type": "order.shipped", "actor": 999_999}, "actor"),
        ({"type": "order.shipped", "recipients": "a@example.com"}, "recipients"),
        ({"type": "order.shipped", "recipients": [1, True]}, "recipients[1]"),
        ({"type": "order.shipped", "recipients": ["not-an-email"]}, "recipients[0]"),
        ({"type": "order.shipped", "recipients": [{"id": 1}]}, "recipients[0]"),
        ({"type": "order.shipped", "recipients": [1.0]}, "recipients[0]"),
        ({"type": "order.shipped", "recipients": [-3]}, "recipients[0]"),
    ],
)
def test_invalid_field_is_400_naming_it(client, token, body, field):
    _assert_invalid(post_event(client, token, body), field)


def test_every_problem_is_listed(client, token):
    data = _assert_invalid(
        post_event(client, token, {"type": 1, "payload": [], "actor": "x", "extra": 1}), "type"
    )
    assert {e["field"] for e in data["errors"]} == {"type", "payload", "actor", "extra"}


@pytest.mark.django_db(transaction=True)
def test_actor_deleted_between_check_and_commit_is_400(client, monkeypatch):
    """The foreign key is checked at commit: the race still ends in a 400."""
    from notify.api import events as events_api

    _, token = ApiKey.issue("racy-actor")

    User = get_user_model()
    # The lookup "finds" a user that is not in the database, as if deleted since.
    ghost = SimpleNamespace(filter=lambda pk: SimpleNamespace(first=lambda: User(pk=pk)))
    monkeypatch.setattr(events_api, "get_user_model", lambda: SimpleNamespace(objects=ghost))
    _assert_invalid(post_event(client, token, {**ORDER, "actor": 424242}), "actor")


def test_payload_over_the_limit_is_400(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_MAX_PAYLOAD_BYTES": 100}
    body = {"type": "order.shipped", "payload": {"note": "x" * 100}}
    data = _assert_invalid(post_event(client, token, body), "payload")
    assert "100 bytes" in data["errors"][0]["message"]
    fits = {"type": "order.shipped", "payload": {"note": "x" * 80}}  # 93 bytes as JSON
    assert post_event(client, token, fits).status_code == 202


def test_body_over_the_limit_is_413(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_MAX_BODY_BYTES": 200}
    body = {"type": "order.shipped", "payload": {"note": "x" * 300}}
    response = post_event(client, token, body)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert Event.objects.count() == 0


def test_declared_length_over_the_limit_is_413_before_reading(client, token, settings):
    settings.NOTIFY = {**settings.NOTIFY, "API_MAX_BODY_BYTES": 200}
    response = post_event(client, token, ORDER, CONTENT_LENGTH="10000000")
    assert response.status_code == 413
    assert Event.objects.count() == 0


@pytest.mark.parametrize("declared", ["abc", "-1", "\u00b2"])
def test_bogus_content_length_is_400(client, token, declared):
    response = post_event(client, token, ORDER, CONTENT_LENGTH=declared)
    _assert_invalid(response, "Content-Length")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_wrong_content_type_is_415(client, token, content_type):
    response = post_event(client, token, ORDER, content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert Event.objects.count() == 0


def test_json_with_utf8_charset_is_accepted(client, token):
    response = post_event(client, token, ORDER, content_type="application/json; charset=UTF-8")
    assert response.status_code == 202


# -- reading an event back ----------------------------------------------------------


def test_event_detail_shows_deliveries(client, token, make_user, make_rule):
    alice = make_user("alice")
    rule = make_rule()
    created = post_event(client, token, {**ORDER, "recipients": [alice.pk]}).json()

    before = get_event(client, token, created["id"]).json()
    assert before["status"] == Event.State.RECEIVED
    assert before["notifications"] == []

    run_until_idle()
    response = get_event(client, token, created["id"])

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == created["id"]
    assert data["type"] == "order.shipped"
    assert data["payload"] == ORDER["payload"]
    assert data["actor"] is None
    assert data["source"] == "api"
    assert data["status"] == Event.State.PROCESSED
    assert data["received_at"] == created["received_at"]
    assert data["processed_at"] is not None
    assert data["error"] == ""
    [notification] = data["notifications"]
    assert notification["user"] == alice.pk
    assert notification["rule"] == rule.pk
    assert notification["category"] == "orders"
    deliveries = {d["channel"]: d for d in notification["deliveries"]}
    assert set(deliveries) == {"email", "inapp"}
    for delivery in deliveries.values():
        assert delivery["status"] == Status.SENT
        assert delivery["attempts"] == 1
        assert delivery["sent_at"] is not None
        assert set(delivery) == {
            "id",
            "channel",
            "status",
            "skip_reason",
            "hold_reason",
            "attempts",
            "provider",
            "provider_message_id",
            "error_code",
            "error_message",
            "sent_at",
            "delivered_at",
            "next_attempt_at",
        }


def test_event_detail_query_count_does_not_grow_with_recipients(
    client, token, make_user, make_rule, django_assert_max_num_queries
):
    make_rule()
    users = [make_user() for _ in range(5)]
    created = post_event(client, token, {**ORDER, "recipients": [u.pk for u in users]}).json()
    run_until_idle()
    # key lookup, last_used_at is fresh, event, notifications, deliveries,
    # workflow runs (and their steps when there are runs: one query each)
    with django_assert_max_num_queries(6):
        data = get_event(client, token, created["id"]).json()
    assert len(data["notifications"]) == 5


def test_unknown_event_is_404(client, token):
    for event_id in (12345, 2**70):
        response = get_event(client, token, event_id)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_another_keys_event_is_404(client, token):
    _, other_token = ApiKey.issue("other")
    created = post_event(client, other_token, ORDER).json()
    assert get_event(client, token, created["id"]).status_code == 404
    assert get_event(client, other_token, created["id"]).status_code == 200


def test_event_detail_needs_a_key(client, token):
    created = post_event(client, token, ORDER).json()
    response = client.get(f"{EVENTS}/{created['id']}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


# -- JSON for every error -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("get", EVENTS, "POST"),
        ("put", EVENTS, "POST"),
        ("post", f"{EVENTS}/1", "GET"),
        ("delete", f"{EVENTS}/1", "GET"),
        ("post", "/api/v1/inbox", "GET"),
        ("get", "/api/v1/inbox/1/read", "POST"),
        ("get", "/api/v1/inbox/read-all", "POST"),
        ("post", "/api/v1/openapi.json", "GET"),
    ],
)
def test_wrong_method_is_405_json(client, db, method, url, allowed):
    response = getattr(client, method)(url)
    assert response.status_code == 405
    assert response["Allow"] == allowed
    assert response.json()["error"] == "method_not_allowed"
    assert response.json()["message"]


@pytest.mark.parametrize("url", ["/api/v1/nope", "/api/v1/events/", "/api/v1/events/abc"])
def test_unknown_api_url_is_404_json(client, db, url):
    response = client.get(url)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# -- OpenAPI ------------------------------------------------------------------------


def _route_to_openapi(prefix: str, pattern) -> str:
    route = str(pattern.pattern)
    return "/" + prefix + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def _api_paths():
    """Every URL pattern under api/v1/ as an OpenAPI path (the catch-all aside)."""
    [include] = [
        p
        for p in get_resolver().url_patterns
        if isinstance(p, URLResolver) and str(p.pattern) == "api/v1/"
    ]
    assert include.urlconf_module is api_urls
    return {
        _route_to_openapi("api/v1/", p)
        for p in include.url_patterns
        if isinstance(p, URLPattern) and p.name != "not-found"
    }


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_document(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.content)
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/events",
        "/api/v1/events/batch",
        "/api/v1/events/{event_id}",
        "/api/v1/events/by-key/{idempotency_key}",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/inbox",
        "/api/v1/inbox/{item_id}/read",
        "/api/v1/inbox/{item_id}/unread",
        "/api/v1/inbox/read-all",
        "/api/v1/inbox/feed",
        "/api/v1/inbox/feed/events",
        "/api/v1/inbox/feed/read-all",
        "/api/v1/inbox/feed/{item_id}/read",
        "/api/v1/inbox/feed/{item_id}/unread",
        "/api/v1/inbox/feed/{item_id}/archive",
        "/api/v1/inbox/feed/{item_id}/unarchive",
        "/api/v1/preferences",
        "/api/v1/devices",
        "/api/v1/openapi.json",
    }
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert doc["paths"]["/api/v1/events"]["post"]["security"] == [{"bearerAuth": []}]
    event_in = doc["components"]["schemas"]["EventIn"]
    assert event_in["additionalProperties"] is False
    assert set(event_in["properties"]) == {
        "type",
        "payload",
        "actor",
        "recipients",
        "scheduled_for",
    }


def test_every_api_url_pattern_is_in_openapi(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    assert _api_paths() <= set(doc["paths"])
    assert len(_api_paths()) == len(doc["paths"])


def test_every_openapi_ref_resolves(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    for ref in set(_refs(doc)):
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_operation_lists_its_path_parameters(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    for path, operations in doc["paths"].items():
        expected = set(re.findall(r"{(\w+)}", path))
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == expected, (path, declared)
