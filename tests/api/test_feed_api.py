"""The bell's feed API: cursors that neither repeat nor skip while items arrive,
filters, counts, mark read / all read, archive, auth by session or signed
token, CORS for the configured origins only, clear 400s and 404s."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync, sync_to_async
from django.core import signing
from django.test import AsyncClient, Client
from django.utils import timezone

from notify import trigger
from notify.inbox import feed, live, tokens
from notify.models import Category, Event, MessageTemplate, Notification
from notify.runtime.worker import run_until_idle

FEED = "/api/v1/inbox/feed"
ORIGIN = "http://127.0.0.1:9999"


@pytest.fixture
def make_item(category):
    """An in-app item as the in-app channel leaves it (inbox_at set)."""
    counter = {"n": 0}
    start = timezone.now() - timedelta(days=1)

    def make(user, *, read=False, at=None, **fields):
        counter["n"] += 1
        n = counter["n"]
        event = Event.objects.create(type="order.shipped", payload={"n": n})
        fields.setdefault("category", category)
        return Notification.objects.create(
            event=event,
            user=user,
            title=fields.pop("title", f"Item {n}"),
            body=f"Body {n}",
            url=f"/orders/{n}",
            inbox_at=at or start + timedelta(minutes=n),
            read_at=timezone.now() if read else None,
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


def ids(response):
    return [item["id"] for item in response.json()["items"]]


def test_cursor_pages_neither_repeat_nor_skip_while_new_items_arrive(as_alice, alice, make_item):
    first = [make_item(alice) for _ in range(25)]
    seen: list[int] = []
    response = as_alice.get(FEED, {"limit": 7})
    while True:
        assert response.status_code == 200, response.content
        seen += ids(response)
        # Newer items land between page requests (and at the very same time as the head).
        make_item(alice, at=timezone.now())
        make_item(alice, at=first[-1].inbox_at)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        response = as_alice.get(FEED, {"limit": 7, "cursor": cursor})
    assert len(seen) == len(set(seen)), "an item was listed twice"
    original = {item.pk for item in first}
    assert original <= set(seen), f"skipped: {sorted(original - set(seen))}"
    assert seen[: len(first)] == [item.pk for item in reversed(first)]


def test_an_item_at_the_same_instant_as_the_cursor_is_not_lost(as_alice, alice, make_item):
    at = timezone.now() - timedelta(minutes=1)
    items = [make_item(alice, at=at) for _ in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        response = as_alice.get(FEED, {"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += ids(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((i.pk for i in items), reverse=True)


def test_the_first_page_has_counts_and_the_live_starting_point(as_alice, alice, bob, make_item):
    for _ in range(3):
        make_item(alice)
    make_item(alice, read=True)
    make_item(bob)
    body = as_alice.get(FEED).json()
    assert body["counts"] == {"unread": 3, "total": 4}
    assert body["next_cursor"] is None
    assert body["live_cursor"]
    item = body["items"][0]
    assert set(item) >= {"id", "title", "body", "url", "category", "read", "archived", "actions"}
    assert (
        "live_cursor"
        not in as_alice.get(FEED, {"cursor": feed.FeedCursor(timezone.now(), 1).encode()}).json()
    )


def test_filters_unread_archived_and_category(as_alice, alice, make_item, category):
    billing = Category.objects.create(key="billing", name="Billing")
    unread = make_item(alice)
    read = make_item(alice, read=True)
    bill = make_item(alice, category=billing)
    archived = make_item(alice, archived_at=timezone.now(), read=True)

    assert ids(as_alice.get(FEED)) == [bill.pk, read.pk, unread.pk]
    assert ids(as_alice.get(FEED, {"unread": "true"})) == [bill.pk, unread.pk]
    assert ids(as_alice.get(FEED, {"archived": "true"})) == [archived.pk]
    assert ids(as_alice.get(FEED, {"archived": "all"})) == [
        archived.pk,
        bill.pk,
        read.pk,
        unread.pk,
    ]
    response = as_alice.get(FEED, {"category": "billing"})
    assert ids(response) == [bill.pk]
    assert response.json()["counts"] == {"unread": 2, "total": 1}
    assert ids(as_alice.get(FEED, {"category": "orders", "unread": "true"})) == [unread.pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "YTEyMw"}, "cursor"),  # "a123": no id
        ({"cursor": signing.dumps(1)}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"archived": "maybe"}, "archived"),
        ({"category": "nope"}, "category"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_query_is_a_400_naming_the_parameter(as_alice, alice, make_item, query, field):
    make_item(alice)
    response = as_alice.get(FEED, query)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["errors"][0]["field"] == field
    assert body["message"].startswith(f"{field}:")


def test_mark_read_unread_archive_and_counts(as_alice, alice, make_item):
    a, b, c = make_item(alice), make_item(alice), make_item(alice)
    response = as_alice.post(f"{FEED}/{a.pk}/read")
    assert response.status_code == 200
    assert response.json()["item"]["read"] is True
    assert response.json()["counts"]["unread"] == 2
    first_read = Notification.objects.get(pk=a.pk).read_at
    as_alice.post(f"{FEED}/{a.pk}/read")  # a repeat keeps the first read time
    assert Notification.objects.get(pk=a.pk).read_at == first_read
    assert as_alice.post(f"{FEED}/{a.pk}/unread").json()["counts"]["unread"] == 3

    response = as_alice.post(f"{FEED}/{b.pk}/archive")
    assert response.json()["item"]["archived"] is True
    assert response.json()["item"]["read"] is True  # archived means done
    assert response.json()["counts"] == {"unread": 2, "total": 2}
    assert ids(as_alice.get(FEED)) == [c.pk, a.pk]
    assert as_alice.post(f"{FEED}/{b.pk}/unarchive").json()["counts"]["total"] == 3

    response = as_alice.post(f"{FEED}/read-all")
    assert response.json() == {"updated": 2, "counts": {"unread": 0, "total": 3}}


def test_mark_all_read_of_one_category(as_alice, alice, make_item):
    billing = Category.objects.create(key="billing", name="Billing")
    make_item(alice)
    make_item(alice, category=billing)
    assert as_alice.post(f"{FEED}/read-all?category=billing").json()["updated"] == 1
    assert as_alice.get(FEED).json()["counts"]["unread"] == 1
    assert as_alice.post(f"{FEED}/read-all?category=nope").status_code == 400


@pytest.mark.parametrize("action", ["read", "unread", "archive", "unarchive"])
def test_another_users_item_is_a_404_and_unchanged(as_alice, bob, make_item, action):
    theirs = make_item(bob)
    response = as_alice.post(f"{FEED}/{theirs.pk}/{action}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.read_at is None and theirs.archived_at is None


def test_anonymous_is_401(client, alice, make_item):
    item = make_item(alice)
    assert client.get(FEED).status_code == 401
    assert client.post(f"{FEED}/{item.pk}/read").status_code == 401
    assert client.get(f"{FEED}/events").status_code == 401


def test_session_posts_need_the_csrf_token(alice, make_item):
    item = make_item(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"{FEED}/{item.pk}/read").status_code == 403
    assert Notification.objects.get(pk=item.pk).read_at is None
    client.get(FEED)  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    assert client.post(f"{FEED}/{item.pk}/read", headers={"X-CSRFToken": token}).status_code == 200


# -- the signed token -----------------------------------------------------------------


def test_a_token_reads_and_changes_its_users_feed_without_cookies_or_csrf(alice, bob, make_item):
    mine, theirs = make_item(alice), make_item(bob)
    client = Client(enforce_csrf_checks=True)
    auth = {"Authorization": f"Bearer {tokens.issue_token(alice)}"}
    assert ids(client.get(FEED, headers=auth)) == [mine.pk]
    assert client.post(f"{FEED}/{mine.pk}/read", headers=auth).status_code == 200
    assert client.post(f"{FEED}/{theirs.pk}/read", headers=auth).status_code == 404


def test_an_expired_forged_or_deactivated_token_is_a_401_saying_why(alice, settings):
    client = Client()
    forged = tokens.issue_token(alice)[:-2] + "xx"
    response = client.get(FEED, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "not valid" in response.json()["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    token = tokens.issue_token(alice)
    settings.NOTIFY = {**settings.NOTIFY, "BELL_TOKEN_MAX_AGE": 60}
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        response = client.get(FEED, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "expired" in response.json()["message"]

    settings.NOTIFY = {**settings.NOTIFY, "BELL_TOKEN_MAX_AGE": 3600}
    token = tokens.issue_token(alice)
    alice.is_active = False
    alice.save()
    response = client.get(FEED, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_token_for_another_signed_value_is_refused(alice):
    other = signing.TimestampSigner(salt="something.else").sign(str(alice.pk))
    response = Client().get(FEED, headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 401


def test_a_token_lives_twelve_hours_by_default(alice):
    token = tokens.issue_token(alice)
    with time_machine.travel(timezone.now() + timedelta(hours=11, minutes=59)):
        assert tokens.user_for_token(token) == alice.pk
    later = timezone.now() + timedelta(hours=12, minutes=1)
    with time_machine.travel(later), pytest.raises(tokens.BadToken, match="expired"):
        tokens.user_for_token(token)


# -- CORS -----------------------------------------------------------------------------


def test_cors_only_for_configured_origins(alice, make_item, settings):
    make_item(alice)
    client = Client()
    auth = {"Authorization": f"Bearer {tokens.issue_token(alice)}", "Origin": ORIGIN}
    response = client.get(FEED, headers=auth)
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(FEED, headers={"Origin": ORIGIN})
    assert preflight.status_code == 403
    assert "BELL_ALLOWED_ORIGINS" in preflight.json()["message"]

    settings.NOTIFY = {**settings.NOTIFY, "BELL_ALLOWED_ORIGINS": [ORIGIN]}
    response = client.get(FEED, headers=auth)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    preflight = client.options(
        f"{FEED}/1/read",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    # Errors are readable cross-origin too.
    response = client.get(FEED, {"cursor": "x"}, headers=auth)
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = client.get(FEED, headers={**auth, "Origin": "http://127.0.0.1:9998"})
    assert "Access-Control-Allow-Origin" not in other.headers


# -- the live stream ------------------------------------------------------------------


def stream_text(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_the_stream_pushes_new_items_and_the_count_to_a_token(alice, make_item, settings):
    settings.NOTIFY = {**settings.NOTIFY, "BELL_ALLOWED_ORIGINS": [ORIGIN]}
    client = Client()
    token = tokens.issue_token(alice)
    live_cursor = client.get(FEED, headers={"Authorization": f"Bearer {token}"}).json()[
        "live_cursor"
    ]
    new = make_item(alice, at=timezone.now())
    response = client.get(
        f"{FEED}/events", {"token": token, "after": live_cursor}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    text = stream_text(response)
    assert "event: item" in text and f'"id": {new.pk}' in text
    assert 'event: unread\ndata: {"unread_count": 1}' in text
    bad = client.get(f"{FEED}/events", {"token": "nope"}, headers={"Origin": ORIGIN})
    assert bad.status_code == 401
    assert bad.headers["Access-Control-Allow-Origin"] == ORIGIN


# -- actions from the template ----------------------------------------------------------


def test_template_action_lines_become_buttons(alice, make_rule):
    MessageTemplate.objects.create(
        message="order_shipped",
        part="inapp",
        body=(
            "Order {{ payload.order_id }} shipped\n"
            "It is on its way.\n"
            "action: Track parcel | https://track.example/{{ payload.order_id }}\n"
            "action: Bad | javascript:alert(1)\n"
            "action: Open order | /orders/{{ payload.order_id }}\n"
        ),
    )
    make_rule(channels=["inapp"])
    trigger("order.shipped", {"order_id": "A-1"}, recipients=[alice])
    run_until_idle()
    client = Client()
    client.force_login(alice)
    [item] = client.get(FEED).json()["items"]
    assert item["body"] == "It is on its way."
    assert item["actions"] == [
        {"label": "Track parcel", "url": "https://track.example/A-1"},
        {"label": "Open order", "url": "/orders/A-1"},
    ]


def test_the_feed_is_in_the_openapi_document(client, db):
    doc = client.get("/api/v1/openapi.json").json()
    listing = doc["paths"]["/api/v1/inbox/feed"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "cursor",
        "limit",
        "unread",
        "archived",
        "category",
    }
    assert {"bellToken": []} in listing["security"]
    assert set(doc["components"]["schemas"]["FeedItem"]["properties"]) >= {"actions", "archived"}
    assert doc["components"]["securitySchemes"]["bellToken"]["scheme"] == "bearer"


def test_the_stream_under_asgi_pushes_to_a_token_at_once(alice, make_item, settings):
    """What ``notify run`` serves (uvicorn): one open stream, pushed without reconnecting."""
    settings.NOTIFY = {**settings.NOTIFY, "BELL_ALLOWED_ORIGINS": [ORIGIN]}
    token = tokens.issue_token(alice)

    async def scenario():
        client = AsyncClient()
        response = await client.get(f"{FEED}/events", {"token": token}, headers={"Origin": ORIGIN})
        assert response["Content-Type"].startswith("text/event-stream")
        assert response["Access-Control-Allow-Origin"] == ORIGIN
        chunks = aiter(response.streaming_content)
        received = ""
        while "event: unread" not in received:
            received += (await anext(chunks)).decode()
        item = await sync_to_async(make_item)(alice, at=timezone.now(), title="pushed live")
        live.notifier.publish(alice.pk)
        while "pushed live" not in received:
            received += (await asyncio.wait_for(anext(chunks), 5)).decode()
        await response.streaming_content.aclose()
        return received, item

    received, item = async_to_sync(scenario)()
    assert f'"id": {item.pk}' in received
    assert '"actions": []' in received


def test_the_feed_is_rate_limited_per_address_and_says_so_cross_origin(alice, settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "BELL_ALLOWED_ORIGINS": [ORIGIN],
        "API_RATE_LIMIT_PER_ADDRESS": "2/m",
    }
    client = Client()
    auth = {"Authorization": f"Bearer {tokens.issue_token(alice)}", "Origin": ORIGIN}
    assert [client.get(FEED, headers=auth).status_code for _ in range(2)] == [200, 200]
    response = client.get(FEED, headers=auth)
    assert response.status_code == 429
    assert "API_RATE_LIMIT_PER_ADDRESS" in response.json()["message"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert client.get(f"{FEED}/events", {"token": "x"}, headers=auth).status_code == 429
