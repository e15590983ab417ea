"""The inbox API: the session user's own items only, paging, the unread filter
and count, marking read/unread/all, 401 for anonymous, CSRF on POSTs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify import trigger
from notify.models import Event, Notification
from notify.runtime.worker import run_until_idle

INBOX = "/api/v1/inbox"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """make_user hashes a password; the production hasher takes ~1 s per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_item(category):
    """An in-app item as the in-app channel leaves it (inbox_at set)."""
    start = timezone.now() - timedelta(days=1)
    counter = {"n": 0}

    def make(user, *, read=False, in_inbox=True, **fields):
        counter["n"] += 1
        n = counter["n"]
        event = Event.objects.create(type="order.shipped", payload={"n": n})
        return Notification.objects.create(
            event=event,
            user=user,
            category=category,
            title=fields.pop("title", f"Item {n}"),
            body=f"Body {n}",
            url=f"/orders/{n}",
            inbox_at=start + timedelta(minutes=n) if in_inbox else None,
            read_at=start + timedelta(minutes=n, seconds=30) if read else None,
            **fields,
        )

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def titles(response):
    return [item["title"] for item in response.json()["results"]]


# -- anonymous ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", INBOX),
        ("post", f"{INBOX}/1/read"),
        ("post", f"{INBOX}/1/unread"),
        ("post", f"{INBOX}/read-all"),
    ],
)
def test_anonymous_is_401_json(client, db, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["message"]


# -- listing ------------------------------------------------------------------------


def test_inbox_lists_own_items_newest_first(as_alice, alice, bob, make_item):
    older = make_item(alice, title="older")
    newer = make_item(alice, title="newer", read=True)
    make_item(bob, title="bob's")
    make_item(alice, title="email only", in_inbox=False)

    response = as_alice.get(INBOX)

    assert response.status_code == 200
    data = response.json()
    assert data["count"] == 2
    assert data["unread_count"] == 1
    assert (data["page"], data["page_size"], data["next"], data["previous"]) == (1, 20, None, None)
    first, second = data["results"]
    assert first == {
        "id": newer.pk,
        "title": "newer",
        "body": newer.body,
        "url": newer.url,
        "category": "orders",
        "created_at": first["created_at"],
        "read": True,
        "read_at": first["read_at"],
    }
    assert first["created_at"] > second["created_at"]
    assert first["read_at"] is not None
    assert (second["id"], second["read"], second["read_at"]) == (older.pk, False, None)


def test_paging(as_alice, alice, make_item):
    for n in range(25):
        make_item(alice, title=f"t{n}")

    page1 = as_alice.get(INBOX, {"page_size": 10}).json()
    assert page1["count"] == 25
    assert [r["title"] for r in page1["results"]] == [f"t{n}" for n in range(24, 14, -1)]
    assert page1["previous"] is None
    assert page1["next"] == "http://testserver/api/v1/inbox?page_size=10&page=2"

    page3 = as_alice.get(INBOX, {"page_size": 10, "page": 3}).json()
    assert [r["title"] for r in page3["results"]] == [f"t{n}" for n in range(4, -1, -1)]
    assert page3["next"] is None
    assert page3["previous"] == "http://testserver/api/v1/inbox?page_size=10&page=2"

    following = as_alice.get(page1["next"]).json()
    assert following["page"] == 2
    assert len(following["results"]) == 10

    beyond = as_alice.get(INBOX, {"page_size": 10, "page": 9}).json()
    assert (beyond["results"], beyond["next"], beyond["count"]) == ([], None, 25)


def test_unread_filter(as_alice, alice, make_item):
    make_item(alice, title="read", read=True)
    make_item(alice, title="unread 1")
    make_item(alice, title="unread 2")

    response = as_alice.get(INBOX, {"unread": "1"})
    assert titles(response) == ["unread 2", "unread 1"]
    assert response.json()["count"] == 2
    assert response.json()["unread_count"] == 2
    assert len(titles(as_alice.get(INBOX, {"unread": "0"}))) == 3
    assert response.json()["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "abc"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page": "99999999999999999999999"}, "page"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "101"}, "page_size"),
        ({"page_size": ""}, "page_size"),
        ({"unread": "maybe"}, "unread"),
    ],
)
def test_bad_query_is_400_naming_the_parameter(as_alice, query, field):
    response = as_alice.get(INBOX, query)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "invalid_request"
    assert data["errors"][0]["field"] == field
    assert field in data["message"]


def test_listing_takes_the_same_queries_for_any_page_size(as_alice, alice, make_item):
    make_item(alice)
    with CaptureQueriesContext(connection) as one:
        as_alice.get(INBOX)
    for _ in range(15):
        make_item(alice)
    with CaptureQueriesContext(connection) as many:
        as_alice.get(INBOX)
    assert len(many) == len(one)


def test_listing_sets_the_csrf_cookie_for_the_posts(alice, make_item):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    item = make_item(alice)
    client.get(INBOX)
    token = client.cookies["csrftoken"].value
    response = client.post(f"{INBOX}/{item.pk}/read", headers={"X-CSRFToken": token})
    assert response.status_code == 200


def test_items_written_by_the_pipeline_show_up(as_alice, alice, make_rule):
    make_rule()
    trigger("order.shipped", {"order_id": "A1", "total": 150}, recipients=[alice])
    run_until_idle()
    [item] = as_alice.get(INBOX).json()["results"]
    assert item["title"] == "Order A1 shipped"
    assert item["read"] is False


# -- marking ------------------------------------------------------------------------


def test_mark_read_and_unread(as_alice, alice, make_item):
    item = make_item(alice)
    make_item(alice)

    response = as_alice.post(f"{INBOX}/{item.pk}/read")
    assert response.status_code == 200
    data = response.json()
    assert (data["id"], data["read"], data["unread_count"]) == (item.pk, True, 1)
    item.refresh_from_db()
    first_read_at = item.read_at
    assert first_read_at is not None

    again = as_alice.post(f"{INBOX}/{item.pk}/read")
    assert again.status_code == 200
    item.refresh_from_db()
    assert item.read_at == first_read_at  # marking twice keeps the first time

    response = as_alice.post(f"{INBOX}/{item.pk}/unread")
    assert response.status_code == 200
    assert (response.json()["read"], response.json()["read_at"]) == (False, None)
    assert response.json()["unread_count"] == 2
    item.refresh_from_db()
    assert item.read_at is None


def test_mark_all_read(as_alice, alice, bob, make_item):
    for _ in range(3):
        make_item(alice)
    make_item(alice, read=True)
    bobs = make_item(bob)

    response = as_alice.post(f"{INBOX}/read-all")

    assert response.status_code == 200
    assert response.json() == {"updated": 3, "unread_count": 0}
    assert as_alice.get(INBOX).json()["unread_count"] == 0
    bobs.refresh_from_db()
    assert bobs.read_at is None
    assert as_alice.post(f"{INBOX}/read-all").json() == {"updated": 0, "unread_count": 0}


@pytest.mark.parametrize("action", ["read", "unread"])
def test_cannot_mark_another_users_item(as_alice, bob, make_item, action):
    bobs = make_item(bob, read=action == "unread")
    before = bobs.read_at

    response = as_alice.post(f"{INBOX}/{bobs.pk}/{action}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    bobs.refresh_from_db()
    assert bobs.read_at == before


def test_cannot_mark_an_item_not_in_the_inbox(as_alice, alice, make_item):
    email_only = make_item(alice, in_inbox=False)
    for item_id in (email_only.pk, 999_999, 2**70):
        assert as_alice.post(f"{INBOX}/{item_id}/read").status_code == 404
    email_only.refresh_from_db()
    assert email_only.read_at is None


# -- CSRF ---------------------------------------------------------------------------


@pytest.fixture
def csrf_client(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


@pytest.mark.parametrize("path", ["{id}/read", "{id}/unread", "read-all"])
def test_post_without_csrf_token_is_403(csrf_client, alice, make_item, path):
    item = make_item(alice, read=path.endswith("unread"))
    before = item.read_at

    response = csrf_client.post(f"{INBOX}/{path.format(id=item.pk)}")

    assert response.status_code == 403
    item.refresh_from_db()
    assert item.read_at == before


def test_post_with_csrf_token_passes(csrf_client, alice, make_item):
    item = make_item(alice)
    csrf_client.cookies["csrftoken"] = "a" * 32
    response = csrf_client.post(f"{INBOX}/{item.pk}/read", headers={"X-CSRFToken": "a" * 32})
    assert response.status_code == 200


def test_csrf_failure_view_answers_json_under_the_api(csrf_client, alice, settings, make_item):
    """With CSRF_FAILURE_VIEW = "notify.api.errors.csrf_failure" the 403 is JSON
    under /api/ and Django's page elsewhere."""
    settings.CSRF_FAILURE_VIEW = "notify.api.errors.csrf_failure"
    item = make_item(alice)
    response = csrf_client.post(f"{INBOX}/{item.pk}/read")
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert "CSRF" in response.json()["message"]

    page = csrf_client.post("/admin/login/")
    assert page.status_code == 403
    assert page["Content-Type"].startswith("text/html")
