"""Alice tries Bob's inbox item ids through every inbox page and API endpoint:
every attempt is refused (404, or simply not shown) and Bob's rows are
exactly as they were."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from notify.inbox import live
from notify.inbox.store import collapse, entries
from notify.models import Event, Notification

CHANGES = [
    # (method, url, page or API)
    ("post", "/inbox/{id}/read"),
    ("post", "/inbox/{id}/unread"),
    ("post", "/api/v1/inbox/{id}/read"),
    ("post", "/api/v1/inbox/{id}/unread"),
]


@pytest.fixture
def people(make_user, category):
    alice, bob = make_user("alice"), make_user("bob")
    start = timezone.now() - timedelta(hours=1)

    def item(user, n, *, read=False, group=""):
        return Notification.objects.create(
            event=Event.objects.create(type="comment.posted", payload={"n": n}),
            user=user,
            category=category,
            title=f"{user.username} secret {n}",
            body="private",
            inbox_at=start + timedelta(minutes=n),
            read_at=start if read else None,
            group_key=group,
        )

    # Both have unread items in the same group (same rule, same thread).
    bobs = [
        item(bob, 1),
        item(bob, 2, read=True),
        item(bob, 3, group="9:t"),
        item(bob, 5, group="9:t"),
    ]
    alices = [item(alice, 4, group="9:t"), item(alice, 6, group="9:t")]
    return alice, bob, alices, bobs


def snapshot(user) -> list[dict]:
    return [model_to_dict(n) for n in Notification.objects.filter(user=user).order_by("pk")]


@pytest.mark.parametrize(("method", "url"), CHANGES)
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_alice_cannot_change_bobs_items(client, people, method, url, accept):
    alice, bob, _, bobs = people
    client.force_login(alice)
    before = snapshot(bob)

    for item in bobs:
        response = getattr(client, method)(url.format(id=item.pk), headers={"Accept": accept})
        assert response.status_code == 404, (url, item.title)

    assert snapshot(bob) == before


def test_read_all_touches_only_her_own(client, people):
    alice, bob, _, _ = people
    client.force_login(alice)
    before = snapshot(bob)

    assert client.post("/inbox/read-all").status_code == 303
    assert client.post("/api/v1/inbox/read-all").json()["updated"] == 0

    assert snapshot(bob) == before
    assert not Notification.objects.filter(user=alice, read_at__isnull=True).exists()


def test_marking_her_collapsed_entry_leaves_bobs_same_group_items(client, people):
    alice, bob, alices, _ = people
    client.force_login(alice)
    before = snapshot(bob)

    client.post(f"/inbox/{alices[-1].pk}/read")

    assert snapshot(bob) == before
    assert all(n.read_at for n in Notification.objects.filter(user=alice))


def test_listings_never_show_bobs_items(client, people):
    alice, _, alices, _ = people
    client.force_login(alice)
    pages = [client.get("/inbox/", {"page": p}).content.decode() for p in ("1", "2", "-1", "x")]
    api = [
        client.get("/api/v1/inbox", query).content.decode()
        for query in ({}, {"unread": "1"}, {"page": "2"})
    ]
    for body in pages + api:
        assert "bob secret" not in body
    # Her collapsed entry counts her two group items, not Bob's two.
    [entry] = collapse(alice.pk, list(entries(alice.pk)))
    assert entry.count == 2
    assert {m.pk for m in entry.members} == {n.pk for n in alices}
    assert '"count": 2' in client.get("/api/v1/inbox").content.decode()


def test_live_feed_never_sends_bobs_items(client, people):
    alice, _, _, bobs = people
    client.force_login(alice)
    very_old = live.Cursor(timezone.now() - timedelta(days=1)).encode()
    for headers, query in (({"Last-Event-ID": very_old}, {}), ({}, {"after": very_old})):
        response = client.get("/inbox/events", query, headers=headers)
        body = b"".join(response.streaming_content).decode()
        assert "alice secret" in body  # her items since that cursor...
        assert "bob secret" not in body  # ...and none of his
        assert all(f'"id": {b.pk},' not in body for b in bobs)


@pytest.mark.parametrize(
    ("method", "url"),
    [*CHANGES, ("post", "/inbox/read-all"), ("get", "/inbox/"), ("get", "/inbox/events")],
)
def test_anonymous_gets_nothing(client, people, method, url):
    _, bob, _, bobs = people
    before = snapshot(bob)
    response = getattr(client, method)(url.format(id=bobs[0].pk))
    assert response.status_code in (302, 401)
    if response.status_code == 302:
        assert "/login" in response["Location"]
    assert snapshot(bob) == before
