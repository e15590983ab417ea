"""Rate limits (issue 13): the events API per key and per address (token buckets,
429 with Retry-After and a JSON error naming the limit), failed sign-ins on the
site and admin logins, and the public pages."""

from __future__ import annotations

import json

import pytest
import time_machine

from notify.api.openapi import document
from notify.api.ratelimit import take
from notify.models import ApiKey

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"
ORDER = {"type": "order.shipped", "payload": {"order_id": "A1"}}


def post_event(client, token, address="198.51.100.1"):
    return client.post(
        EVENTS,
        json.dumps(ORDER),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
        REMOTE_ADDR=address,
    )


def limits(settings, **values):
    settings.NOTIFY = {**settings.NOTIFY, **values}


# -- the events API ---------------------------------------------------------------------


def test_a_key_gets_429_after_its_limit_with_retry_after(client, settings):
    limits(settings, API_RATE_LIMIT_PER_KEY="5/m", API_RATE_LIMIT_PER_ADDRESS=None)
    _, token = ApiKey.issue("shop")
    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        statuses = [post_event(client, token, f"198.51.100.{i}").status_code for i in range(5)]
        assert statuses == [202] * 5  # the burst: the bucket's size
        over = post_event(client, token)
    assert over.status_code == 429
    assert over["Retry-After"] == "12"  # one token back at 5 per 60 s
    body = over.json()
    assert body["error"] == "rate_limited"
    assert "API_RATE_LIMIT_PER_KEY" in body["message"] and "5 requests per 60 s" in body["message"]


def test_the_bucket_refills_at_the_rate(client, settings):
    limits(settings, API_RATE_LIMIT_PER_KEY="5/m", API_RATE_LIMIT_PER_ADDRESS=None)
    _, token = ApiKey.issue("shop")
    with time_machine.travel("2026-03-01 12:00:00", tick=False) as clock:
        for _ in range(5):
            post_event(client, token)
        assert post_event(client, token).status_code == 429
        clock.shift(12)
        assert post_event(client, token).status_code == 202
        assert post_event(client, token).status_code == 429


def test_keys_have_buckets_of_their_own(client, settings):
    limits(settings, API_RATE_LIMIT_PER_KEY="2/m", API_RATE_LIMIT_PER_ADDRESS=None)
    _, first = ApiKey.issue("shop")
    _, second = ApiKey.issue("billing")
    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        assert [post_event(client, first).status_code for _ in range(3)] == [202, 202, 429]
        assert post_event(client, second).status_code == 202


@pytest.mark.parametrize("token", [None, "nfy_abc_wrong", "not-a-token"])
def test_an_address_is_limited_with_or_without_a_valid_key(client, settings, token):
    limits(settings, API_RATE_LIMIT_PER_KEY=None, API_RATE_LIMIT_PER_ADDRESS="3/m")
    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answers = [
            client.post(EVENTS, "{}", content_type="application/json", headers=headers)
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert answers[-1]["Retry-After"] == "20"
        assert "API_RATE_LIMIT_PER_ADDRESS" in answers[-1].json()["message"]
        # Another address is not held up.
        other = client.post(EVENTS, "{}", content_type="application/json", REMOTE_ADDR="10.0.0.9")
        assert other.status_code == 401


def test_reads_and_cancels_count_too(client, settings):
    limits(settings, API_RATE_LIMIT_PER_KEY="2/m", API_RATE_LIMIT_PER_ADDRESS=None)
    _, token = ApiKey.issue("shop")
    auth = {"Authorization": f"Bearer {token}"}
    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        assert client.get(f"{EVENTS}/1", headers=auth).status_code == 404
        assert client.delete(f"{EVENTS}/by-key/x", headers=auth).status_code == 404
        assert client.get(f"{EVENTS}/1", headers=auth).status_code == 429


def test_default_limits_let_normal_traffic_through(client):
    _, token = ApiKey.issue("shop")
    assert all(post_event(client, token).status_code == 202 for _ in range(50))


def test_the_bucket_never_spends_a_token_twice_under_contention():
    from concurrent.futures import ThreadPoolExecutor

    from channels.ratelimit import parse_rate

    rate = parse_rate("20/h")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: take("contention", rate, now=1000.0), range(60)))
    allowed = sum(r is None for r in results)
    # Never more than the bucket holds; a request that waits too long for the lock
    # on a loaded machine is refused, never let through.
    assert 0 < allowed <= 20


def test_openapi_documents_429_on_the_events_endpoints():
    doc = document()
    for path in ("/api/v1/events", "/api/v1/events/{event_id}"):
        for operation in doc["paths"][path].values():
            assert operation["responses"]["429"] == {
                "$ref": "#/components/responses/TooManyRequests"
            }
    too_many = doc["components"]["responses"]["TooManyRequests"]
    assert "Retry-After" in too_many["headers"]
    assert "API_RATE_LIMIT_PER_KEY" in too_many["description"]
    assert "429" not in doc["paths"]["/api/v1/inbox"]["get"]["responses"]


# -- sign-ins ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_wrong_passwords_are_throttled_per_username(client, settings, make_user, url):
    limits(settings, LOGIN_FAILURES_PER_USERNAME="3/15m", LOGIN_FAILURES_PER_ADDRESS=None)
    make_user("alice", is_staff=True)
    with time_machine.travel("2026-03-01 12:00:00", tick=False):
        for i in range(3):
            response = client.post(
                url, {"username": "alice", "password": "wrong"}, REMOTE_ADDR=f"203.0.113.{i}"
            )
            assert response.status_code == 200  # the form again
        # Now even the right password is refused, from anywhere, until the window ends.
        blocked = client.post(url, {"username": "alice", "password": "pw-alice"})
    assert blocked.status_code == 429
    assert blocked["Retry-After"] == "900"
    assert "LOGIN_FAILURES_PER_USERNAME" in blocked.content.decode()
    assert "_auth_user_id" not in client.session
    with time_machine.travel("2026-03-01 12:15:00", tick=False):
        ok = client.post(url, {"username": "alice", "password": "pw-alice"})
    assert ok.status_code == 302


def test_wrong_passwords_are_throttled_per_address(client, settings, make_user):
    limits(settings, LOGIN_FAILURES_PER_USERNAME=None, LOGIN_FAILURES_PER_ADDRESS="5/15m")
    with time_machine.travel("2026-03-01 12:05:00", tick=False):
        for i in range(5):
            data = {"username": f"user{i}", "password": "wrong"}
            assert client.post("/accounts/login/", data).status_code == 200
        blocked = client.post("/accounts/login/", {"username": "user9", "password": "x"})
        assert blocked.status_code == 429
        assert blocked["Retry-After"] == "600"
        elsewhere = client.post(
            "/accounts/login/", {"username": "user9", "password": "x"}, REMOTE_ADDR="10.0.0.7"
        )
        assert elsewhere.status_code == 200


def test_150_wrong_passwords_with_the_defaults_are_throttled(client, make_user):
    make_user("alice")
    statuses = [
        client.post("/accounts/login/", {"username": "alice", "password": f"guess{i}"}).status_code
        for i in range(150)
    ]
    assert statuses.count(200) == 10 and statuses.count(429) == 140


def test_successful_sign_ins_are_not_counted(client, settings, make_user):
    limits(settings, LOGIN_FAILURES_PER_USERNAME="2/15m")
    make_user("alice")
    for _ in range(5):
        assert (
            client.post(
                "/accounts/login/", {"username": "alice", "password": "pw-alice"}
            ).status_code
            == 302
        )
        client.logout()


# -- public pages ------------------------------------------------------------------------


def test_unsubscribe_is_throttled_per_address(client, settings):
    limits(settings, PAGE_RATE_LIMIT_PER_ADDRESS="3/m")
    with time_machine.travel("2026-03-01 12:00:30", tick=False):
        statuses = [client.get("/unsubscribe/not-a-token/").status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/settings/notifications/contacts/999/verify/"),
        ("get", "/settings/notifications/verify-email/bad-token/"),
        ("post", "/settings/notifications/test/"),
    ],
)
def test_verification_and_test_sends_are_throttled(client, settings, make_user, method, url):
    limits(settings, PAGE_RATE_LIMIT_PER_ADDRESS="2/m")
    client.force_login(make_user("alice"))
    with time_machine.travel("2026-03-01 12:00:30", tick=False):
        answers = [getattr(client, method)(url) for _ in range(3)]
    assert answers[-1].status_code == 429
    assert answers[-1]["Retry-After"] == "30"
    assert all(a.status_code != 429 for a in answers[:2])
