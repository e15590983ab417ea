"""The inbox page (/inbox/): listing, unread marking, paging, the header badge,
mark read / unread / all through plain forms (and their JSON variant), groups
collapsed into one entry, and the live feed (/inbox/events)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from html import unescape

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client
from django.utils import timezone

from notify import trigger
from notify.fanout.pipeline import notification_group_key
from notify.inbox import live
from notify.inbox.actions import safe_link
from notify.inbox.store import collapse, collapsed_title, entries
from notify.models import Category, Event, Notification
from notify.runtime.worker import run_until_idle
from rules.models import Rule

INBOX = "/inbox/"


@pytest.fixture
def make_item(category):
    """An in-app item as the in-app channel leaves it (inbox_at set)."""
    start = timezone.now() - timedelta(days=1)
    counter = {"n": 0}

    def make(user, *, read=False, actor=None, group="", title=None, **fields):
        counter["n"] += 1
        n = counter["n"]
        event = Event.objects.create(type="comment.posted", payload={"n": n}, actor=actor)
        return Notification.objects.create(
            event=event,
            user=user,
            category=category,
            title=title or f"Item {n}",
            body=f"Body {n}",
            url=fields.pop("url", f"/things/{n}"),
            inbox_at=fields.pop("inbox_at", start + timedelta(minutes=n)),
            read_at=start + timedelta(minutes=n, seconds=30) if read else None,
            group_key=group,
            **fields,
        )

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def entry_titles(html: str) -> list[str]:
    """The entries' titles in page order (the text of each .inbox-title)."""
    found = re.findall(r'<p class="inbox-title">(.*?)</p>', html, flags=re.S)
    return [unescape(re.sub(r"<[^>]+>", "", t)).replace("Unread: ", "").strip() for t in found]


def entry_html(html: str, item_id: int) -> str:
    match = re.search(
        rf'<li class="inbox-item[^"]*"\s+id="item-{item_id}".*?</form>\s*</li>', html, re.S
    )
    assert match, f"no entry for item {item_id}"
    return match.group(0)


def badge(html: str) -> tuple[bool, str]:
    """(hidden, count) of the header's #unread-badge."""
    match = re.search(r'<span class="badge" id="unread-badge"([^>]*)>(.*?)</span></a>', html, re.S)
    assert match, "no unread badge in the header"
    count = re.sub(r"<[^>]+>|unread:", "", match.group(2)).strip()
    return "hidden" in match.group(1), count


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_token_of(client: Client) -> str:
    page = client.get(INBOX).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


# -- listing --------------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in(client, db):
    response = client.get(INBOX)
    assert response.status_code == 302
    assert "next=/inbox/" in response["Location"]


def test_lists_own_items_newest_first_with_unread_marked(as_alice, alice, bob, make_item):
    older = make_item(alice, title="older, unread")
    newer = make_item(alice, title="newer, read", read=True)
    make_item(bob, title="bob's")
    make_item(alice, title="email only", inbox_at=None)

    response = as_alice.get(INBOX)

    assert response.status_code == 200
    html = response.content.decode()
    assert entry_titles(html) == ["newer, read", "older, unread"]
    unread, read = entry_html(html, older.pk), entry_html(html, newer.pk)
    assert "is-unread" in unread and "is-read" not in unread
    assert '<span class="visually-hidden">Unread: </span>' in unread  # for screen readers
    assert "Unread: " not in read and "is-read" in read
    assert "Mark read" in unread and f'action="/inbox/{older.pk}/read"' in unread
    assert "Mark unread" in read and f'action="/inbox/{newer.pk}/unread"' in read
    assert "bob's" not in html and "email only" not in html
    assert f'href="{older.url}"' in unread


def test_badge_counts_unread_items_in_the_header_of_every_page(as_alice, alice, make_item):
    for _ in range(3):
        make_item(alice)
    make_item(alice, read=True)

    assert badge(as_alice.get(INBOX).content.decode()) == (False, "3")
    assert "<span data-unread-count>3</span> unread" in as_alice.get(INBOX).content.decode()
    # Any page that extends base.html gets it from the context processor.
    other = Category.objects.create(key="news", name="News")
    from notify.preferences.one_click import UnsubscribeScope, make_token

    token = make_token(UnsubscribeScope(alice.pk, other.key, "email"))
    assert badge(as_alice.get(f"/unsubscribe/{token}/").content.decode()) == (False, "3")

    Notification.objects.update(read_at=timezone.now())
    assert badge(as_alice.get(INBOX).content.decode()) == (True, "0")


def test_empty_inbox_says_so(as_alice):
    html = as_alice.get(INBOX).content.decode()
    assert "Nothing here yet" in html
    assert entry_titles(html) == []


def test_paging(as_alice, alice, make_item):
    for n in range(45):
        make_item(alice, title=f"t{n}")

    page1 = as_alice.get(INBOX).content.decode()
    assert entry_titles(page1) == [f"t{n}" for n in range(44, 24, -1)]
    assert "Page 1 of 3" in page1 and 'href="?page=2"' in page1 and 'rel="prev"' not in page1

    page3 = as_alice.get(INBOX, {"page": 3}).content.decode()
    assert entry_titles(page3) == [f"t{n}" for n in range(4, -1, -1)]
    assert 'href="?page=2"' in page3 and 'rel="next"' not in page3

    assert entry_titles(as_alice.get(INBOX, {"page": "abc"}).content.decode())[0] == "t44"
    assert entry_titles(as_alice.get(INBOX, {"page": 99}).content.decode())[0] == "t4"


def test_unsafe_links_and_markup_are_neutralised(as_alice, alice, make_item):
    item = make_item(alice, title="<script>alert(1)</script>", url="javascript:alert(1)")
    html = as_alice.get(INBOX).content.decode()
    entry = entry_html(html, item.pk)
    assert "<script>alert(1)</script>" not in entry
    assert "&lt;script&gt;" in entry
    assert "javascript:" not in entry
    assert [safe_link(u) for u in ("/a", "//evil.example/a", "https://x.example", "data:x")] == [
        "/a",
        "",
        "https://x.example",
        "",
    ]


# -- marking through forms -----------------------------------------------------------------


def test_mark_read_and_unread_by_form_posts(alice, make_item):
    client = csrf_client(alice)
    item = make_item(alice)
    make_item(alice)
    token = csrf_token_of(client)

    response = client.post(f"/inbox/{item.pk}/read", {"csrfmiddlewaretoken": token, "page": "2"})

    assert response.status_code == 303
    assert response["Location"] == "/inbox/?page=2"
    item.refresh_from_db()
    first_read_at = item.read_at
    assert first_read_at is not None
    assert badge(client.get(INBOX).content.decode()) == (False, "1")

    client.post(f"/inbox/{item.pk}/read", {"csrfmiddlewaretoken": token})
    item.refresh_from_db()
    assert item.read_at == first_read_at  # a repeat keeps the first time

    response = client.post(f"/inbox/{item.pk}/unread", {"csrfmiddlewaretoken": token})
    assert (response.status_code, response["Location"]) == (303, "/inbox/")
    item.refresh_from_db()
    assert item.read_at is None


def test_mark_all_read_by_form_post(alice, bob, make_item):
    client = csrf_client(alice)
    for _ in range(3):
        make_item(alice)
    bobs = make_item(bob)

    response = client.post(
        "/inbox/read-all", {"csrfmiddlewaretoken": csrf_token_of(client), "page": "1"}
    )

    assert response.status_code == 303
    assert not Notification.objects.filter(user=alice, read_at__isnull=True).exists()
    bobs.refresh_from_db()
    assert bobs.read_at is None
    html = client.get(INBOX).content.decode()
    assert badge(html) == (True, "0")
    assert re.search(r'<form[^>]*class="inbox-read-all"[^>]*hidden', html, re.S)


@pytest.mark.parametrize("path", ["{id}/read", "{id}/unread", "read-all"])
def test_posts_without_csrf_token_are_refused(alice, make_item, path):
    client = csrf_client(alice)
    item = make_item(alice, read=path.endswith("unread"))
    before = item.read_at

    response = client.post(f"/inbox/{path.format(id=item.pk)}")

    assert response.status_code == 403
    item.refresh_from_db()
    assert item.read_at == before


@pytest.mark.parametrize("path", ["1/read", "1/unread", "read-all"])
def test_posts_need_a_signed_in_user_and_get_is_not_allowed(client, alice, path):
    assert client.post(f"/inbox/{path}").status_code == 302
    client.force_login(alice)
    assert client.get(f"/inbox/{path}").status_code == 405


def test_json_variant_for_the_script(as_alice, alice, make_item):
    item = make_item(alice)
    make_item(alice)

    response = as_alice.post(
        f"/inbox/{item.pk}/read", {"page": "1"}, headers={"Accept": "application/json"}
    )

    assert response.status_code == 200
    data = response.json()
    assert (data["id"], data["read"], data["unread_count"]) == (item.pk, True, 1)
    assert f'id="item-{item.pk}"' in data["html"] and "Mark unread" in data["html"]

    everything = as_alice.post("/inbox/read-all", headers={"Accept": "application/json"}).json()
    assert everything["unread_count"] == 0
    assert everything["html"].count('class="inbox-item is-read') == 2


# -- collapsing -------------------------------------------------------------------------


@pytest.fixture
def commenters(make_user):
    return [make_user(f"c{n:02d}", first_name=f"Commenter{n:02d}") for n in range(25)]


def test_same_group_unread_items_collapse_into_one_entry(as_alice, alice, make_item, commenters):
    make_item(alice, title="before the thread")
    for n, actor in enumerate(commenters):
        make_item(
            alice,
            actor=actor,
            group="7:thread-1",
            title=f"Commenter{n:02d} commented on Launch plan",
        )
    make_item(alice, title="other thread", group="7:thread-2")
    read_member = make_item(alice, title="read member", group="7:thread-1", read=True)

    html = as_alice.get(INBOX).content.decode()

    assert entry_titles(html) == [
        "read member",
        "other thread",
        "Commenter24 and 24 others commented on Launch plan",
        "before the thread",
    ]
    assert badge(html) == (False, "27")  # the badge counts items, not entries
    head = Notification.objects.get(title="Commenter24 commented on Launch plan")
    entry = entry_html(html, head.pk)
    assert 'data-group="7:thread-1"' in entry and "is-collapsed" in entry
    assert "<details" in entry and "<summary>Show all 25</summary>" in entry
    members = re.findall(r"Commenter(\d\d) commented on Launch plan</a>", entry)
    assert members == [f"{n:02d}" for n in range(24, 4, -1)]  # the newest 20...
    assert "and 5 more" in entry  # ...and how many more
    assert "read member" not in entry
    assert read_member.read_at is not None


def test_collapsed_titles():
    event = Event(pk=1, type="x")
    event.actor = get_user_model()(pk=1, username="alice", first_name="Alice")
    head = Notification(title="Alice commented on Plan", event=event)
    assert collapsed_title(head, 1, 1) == "Alice commented on Plan"
    assert collapsed_title(head, 2, 2) == "Alice and 1 other commented on Plan"
    assert collapsed_title(head, 30, 25) == "Alice and 24 others commented on Plan"
    assert collapsed_title(head, 3, 1) == "Alice commented on Plan (+2 more)"  # one person
    head.title = "Order A1 shipped"  # a title that does not start with the actor
    assert collapsed_title(head, 3, 3) == "Order A1 shipped (+2 more)"


def test_marking_the_collapsed_entry_read_marks_its_members(alice, make_item, commenters):
    client = csrf_client(alice)
    members = [
        make_item(alice, actor=a, group="7:t", title=f"{a.first_name} commented on X")
        for a in commenters[:3]
    ]
    head = members[-1]
    token = csrf_token_of(client)
    # A comment that arrives after the page was shown is not marked with the others.
    later = make_item(
        alice,
        actor=commenters[3],
        group="7:t",
        title="Commenter03 commented on X",
        inbox_at=head.inbox_at + timedelta(seconds=1),
    )

    client.post(f"/inbox/{head.pk}/read", {"csrfmiddlewaretoken": token})

    for member in members:
        member.refresh_from_db()
        assert member.read_at is not None
    later.refresh_from_db()
    assert later.read_at is None
    # Read together, they stay one entry (read), next to the newer unread one.
    html = client.get(INBOX).content.decode()
    assert entry_titles(html) == [
        later.title,
        "Commenter02 and 2 others commented on X",
    ]
    assert "is-read is-collapsed" in entry_html(html, head.pk)

    # Marking that entry unread brings its members back with it: one unread set.
    client.post(f"/inbox/{head.pk}/unread", {"csrfmiddlewaretoken": token})
    assert not Notification.objects.filter(user=alice, read_at__isnull=False).exists()
    html = client.get(INBOX).content.decode()
    assert entry_titles(html) == ["Commenter03 and 3 others commented on X"]


def test_pipeline_sets_group_keys_and_the_inbox_collapses_them(as_alice, alice, commenters):
    comments = Category.objects.create(key="comments", name="Comments")
    rule = Rule.objects.create(
        name="comments",
        event_type="comment.posted",
        category=comments,
        recipients=["payload:watchers"],
        channels=["inapp"],
        message="comment_posted",
    )
    for actor in commenters[:3]:
        trigger(
            "comment.posted",
            {"title": "Launch plan", "comment": "+1", "thread": 42, "watchers": [alice.pk]},
            actor=actor,
        )
    trigger("comment.posted", {"title": "Lone", "comment": "hi", "watchers": [alice.pk]})
    run_until_idle()

    keys = set(Notification.objects.values_list("group_key", flat=True))
    assert keys == {f"{rule.pk}:42", ""}
    html = as_alice.get(INBOX).content.decode()
    assert entry_titles(html) == [
        "Someone commented on Lone",
        "Commenter02 and 2 others commented on Launch plan",
    ]
    api = as_alice.get("/api/v1/inbox").json()
    assert api["count"] == 2 and api["unread_count"] == 4
    grouped = api["results"][1]
    assert grouped["title"] == "Commenter02 and 2 others commented on Launch plan"
    assert grouped["group"]["key"] == f"{rule.pk}:42"
    assert grouped["group"]["count"] == 3
    assert [m["title"] for m in grouped["group"]["members"]] == [
        f"Commenter{n:02d} commented on Launch plan" for n in (2, 1, 0)
    ]
    assert "group" not in api["results"][0]

    # The API's mark-read on the collapsed entry marks its members too.
    response = as_alice.post(f"/api/v1/inbox/{grouped['id']}/read")
    assert response.json()["unread_count"] == 1


def test_group_key_choice():
    event = Event(type="x", object_ref="shop.order:5", payload={"thread": "t"})
    assert notification_group_key(3, event) == "3:shop.order:5"
    assert notification_group_key(3, Event(type="x", payload={"thread": "t", "group": 9})) == "3:t"
    assert notification_group_key(3, Event(type="x", payload={"group": 9})) == "3:9"
    for payload in ({}, {"thread": ""}, {"thread": True}, {"thread": {"a": 1}}, {"thread": [1]}):
        assert notification_group_key(3, Event(type="x", payload=payload)) == ""
    assert notification_group_key(3, Event(type="x", payload=[1])) == ""
    long = notification_group_key(3, Event(type="x", payload={"thread": "x" * 500}))
    assert long.startswith("3:sha256:") and len(long) <= 200


def test_collapsing_costs_two_queries_whatever_the_page_size(
    alice, make_item, commenters, django_assert_num_queries
):
    for actor in commenters:
        make_item(alice, actor=actor, group=f"g{actor.pk % 3}")
    page = list(entries(alice.pk)[:20])
    assert len(page) == 3
    with django_assert_num_queries(2):
        result = collapse(alice.pk, page)
    assert sorted(e.count for e in result) == [8, 8, 9]


# -- live feed ------------------------------------------------------------------------------


def parse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            events.append(fields)
    return events


def wsgi_body(response) -> str:
    """The body as a WSGI server sends it: under WSGI the view answers one
    round as a finite (synchronous) stream; the browser reconnects for more."""
    assert response.streaming and not response.is_async
    return b"".join(response.streaming_content).decode()


def test_events_need_a_signed_in_user(client, db):
    response = client.get("/inbox/events")
    assert response.status_code == 401


def test_events_under_wsgi_send_one_round_after_the_cursor(as_alice, alice, make_item):
    old = make_item(alice, title="seen on the page")
    cursor = live.Cursor.of(old).encode()
    new = make_item(alice, title="new", inbox_at=old.inbox_at + timedelta(seconds=10))

    response = as_alice.get("/inbox/events", {"after": cursor})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"].startswith("no-cache")
    body = wsgi_body(response)
    events = parse_events(body)
    assert events[0] == {"retry": str(live.RETRY_MS)}
    [item] = [e for e in events if e.get("event") == "item"]
    assert item["id"] == live.Cursor.of(new).encode()
    assert '"title": "new"' in item["data"] and "seen on the page" not in body
    [unread] = [e for e in events if e.get("event") == "unread"]
    assert unread["data"] == '{"unread_count": 2}'

    # Reconnecting with Last-Event-ID resumes after it: nothing is sent twice.
    again = as_alice.get("/inbox/events", headers={"Last-Event-ID": item["id"]})
    assert "event: item" not in wsgi_body(again)


def test_events_under_asgi_push_a_new_item_without_reconnecting(alice, make_item):
    """The real stream (ASGI): open, a new item arrives, it is pushed at once."""
    make_item(alice, title="already there")

    async def scenario():
        client = AsyncClient()
        await sync_to_async(client.force_login)(alice)
        response = await client.get("/inbox/events")
        assert response["Content-Type"].startswith("text/event-stream")
        chunks = aiter(response.streaming_content)
        received = ""
        while "event: unread" not in received:  # the first round: count only
            received += (await anext(chunks)).decode()
        assert "event: item" not in received
        await sync_to_async(make_item)(alice, title="pushed live", inbox_at=timezone.now())
        live.notifier.publish(alice.pk)
        started = asyncio.get_running_loop().time()
        while "pushed live" not in received:
            received += (await asyncio.wait_for(anext(chunks), 5)).decode()
        elapsed = asyncio.get_running_loop().time() - started
        await response.streaming_content.aclose()
        return received, elapsed

    received, elapsed = async_to_sync(scenario)()
    assert elapsed < 2
    assert "already there" not in received
    assert live.notifier.listeners(alice.pk) == 0  # the subscription ended with the stream


def test_live_feed_catches_late_commits_and_skips_what_it_sent(alice, make_item):
    base = timezone.now()
    first = make_item(alice, inbox_at=base - timedelta(seconds=1))
    feed = live.LiveFeed(alice.pk, live.Cursor.of(first))
    feed.start()
    assert feed.poll() == ([], 1)  # the count comes first; nothing new

    newer = make_item(alice, inbox_at=base + timedelta(seconds=2))
    late = make_item(alice, inbox_at=base)  # committed after `newer`, stamped before it
    new, unread = feed.poll()
    assert [n.pk for n in new] == [late.pk, newer.pk]
    assert unread == 3
    assert feed.poll() == ([], None)

    later_still = make_item(alice, inbox_at=base - timedelta(seconds=0.5))
    assert [n.pk for n in feed.poll()[0]] == [later_still.pk]  # within LOOKBACK


def test_cursor_decoding_is_strict():
    now = timezone.now()
    cursor = live.Cursor(now, 7)
    assert live.Cursor.decode(cursor.encode()) == cursor
    for bad in (None, "", "abc", "1-2-3", "12-x", "-5-1", f"{10**30}-1", "1--1"):
        assert live.Cursor.decode(bad) is None, bad
    future = live.Cursor(now + timedelta(days=3), 1).encode()
    assert live.Cursor.decode(future) is None


def test_group_entries_are_pushed_as_one_collapsed_entry(as_alice, alice, make_item, commenters):
    first = make_item(alice, title="page top")
    cursor = live.Cursor.of(first).encode()
    for n, actor in enumerate(commenters[:3]):
        make_item(
            alice,
            actor=actor,
            group="7:t",
            title=f"{actor.first_name} commented on X",
            inbox_at=first.inbox_at + timedelta(seconds=n + 1),
        )
    response = as_alice.get("/inbox/events", {"after": cursor})
    events = parse_events(wsgi_body(response))
    [item] = [e for e in events if e.get("event") == "item"]
    assert '"group": "7:t"' in item["data"]
    assert "Commenter02 and 2 others commented on X" in item["data"]
