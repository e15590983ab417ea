"""``/api/v1/devices``: registering, listing and forgetting push devices."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from notify.models import ContactPoint
from notify.preferences.devices import forget_gone, normalise_device

URL = "/api/v1/devices"
APNS_TOKEN = "ab" * 32
SUBSCRIPTION = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
    "expirationTime": None,
    "keys": {"p256dh": "BPub" + "x" * 83, "auth": "secret-auth-16b"},
}


@pytest.fixture
def ann(make_user):
    return make_user("ann")


@pytest.fixture
def browser_channel(settings):
    """A Web Push channel with the default policy: the push services' hosts."""
    from tests.peers.push import WebPushPeer

    peer = WebPushPeer()
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "browser": {
                "BACKEND": "channels.webpush.WebPushChannel",
                "OPTIONS": {
                    "VAPID_PRIVATE_KEY": peer.vapid_private_key,
                    "VAPID_SUBJECT": "mailto:ops@example.com",
                },
            },
        },
    }
    return peer


@pytest.fixture
def client(ann, browser_channel):
    client = Client()
    client.force_login(ann)
    return client


def post(client, body, method="post"):
    return getattr(client, method)(URL, json.dumps(body), content_type="application/json")


def test_register_list_and_forget_devices_of_each_kind(client, ann, browser_channel):
    fcm = post(client, {"kind": "fcm", "token": "fcm-token-abcdefghijklmnop:xyz"})
    apns = post(client, {"kind": "apns", "token": APNS_TOKEN.upper()})
    web = post(client, {"kind": "webpush", "subscription": SUBSCRIPTION})
    assert [r.status_code for r in (fcm, apns, web)] == [201, 201, 201]
    assert web.json()["label"] == "browser (fcm.googleapis.com)"
    points = ContactPoint.objects.filter(user=ann)
    assert {p.kind for p in points} == {"fcm", "apns", "webpush"}
    assert all(p.verified for p in points)
    assert points.get(kind="apns").address == APNS_TOKEN  # stored lower-case
    stored = json.loads(points.get(kind="webpush").address)
    assert stored == {"endpoint": SUBSCRIPTION["endpoint"], "keys": SUBSCRIPTION["keys"]}

    listed = client.get(URL).json()
    assert [d["kind"] for d in listed["devices"]] == ["webpush", "apns", "fcm"]
    assert listed["webpush"] == {"application_server_key": browser_channel.vapid_public_key}

    gone = post(client, {"kind": "apns", "token": APNS_TOKEN}, "delete")
    assert gone.status_code == 204
    assert post(client, {"kind": "apns", "token": APNS_TOKEN}, "delete").status_code == 404
    assert not ContactPoint.objects.filter(user=ann, kind="apns").exists()


def test_several_devices_per_user_and_the_newest_is_primary(client, ann):
    first = post(client, {"kind": "fcm", "token": "first-token-abcdefghijklmnop"})
    second = post(client, {"kind": "fcm", "token": "second-token-abcdefghijklmnop"})
    again = post(client, {"kind": "fcm", "token": "first-token-abcdefghijklmnop"})
    assert (first.status_code, second.status_code, again.status_code) == (201, 201, 200)
    points = ContactPoint.objects.filter(user=ann, kind="fcm")
    assert points.count() == 2
    assert points.get(is_primary=True).address == "first-token-abcdefghijklmnop"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "telegram", "token": "x"}, "kind"),
        ({"kind": "apns", "token": "not-hex"}, "token"),
        ({"kind": "fcm", "token": ""}, "token"),
        ({"kind": "webpush", "subscription": {"endpoint": "http://push.test/x"}}, "subscription"),
        (
            {
                "kind": "webpush",
                "subscription": {**SUBSCRIPTION, "endpoint": "https://127.0.0.1/x"},
            },
            "subscription",
        ),
        (
            {"kind": "webpush", "subscription": {"endpoint": SUBSCRIPTION["endpoint"]}},
            "subscription",
        ),
    ],
)
def test_bad_devices_are_a_400_naming_the_field(client, ann, body, field):
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert not ContactPoint.objects.filter(user=ann).exists()


def test_devices_need_a_session_and_csrf(ann, db):
    assert Client().get(URL).status_code == 401
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ann)
    assert post(strict, {"kind": "apns", "token": APNS_TOKEN}).status_code == 403
    token = strict.get(URL).cookies["csrftoken"].value
    response = strict.post(
        URL,
        json.dumps({"kind": "apns", "token": APNS_TOKEN}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 201


def test_one_users_delete_cannot_touch_anothers_device(client, make_user):
    bob = make_user("bob")
    ContactPoint.objects.create(user=bob, kind="apns", address=APNS_TOKEN)
    assert post(client, {"kind": "apns", "token": APNS_TOKEN}, "delete").status_code == 404
    assert ContactPoint.objects.filter(user=bob).exists()


def test_without_a_webpush_channel_there_is_no_key_and_no_subscription(client, settings):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {k: v for k, v in settings.NOTIFY["CHANNELS"].items() if k != "browser"},
    }
    assert client.get(URL).json()["webpush"] == {"application_server_key": None}
    response = post(client, {"kind": "webpush", "subscription": SUBSCRIPTION})
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "field": "kind",
        "message": "no Web Push channel is configured",
    }


def test_forget_gone_deletes_only_device_kinds(make_user):
    ann = make_user("ann")
    ContactPoint.objects.create(user=ann, kind="apns", address=APNS_TOKEN)
    ContactPoint.objects.create(user=ann, kind="email", address="ann@example.com")
    assert forget_gone("email", "ann@example.com") == 0
    assert forget_gone("apns", APNS_TOKEN) == 1
    assert list(ContactPoint.objects.values_list("kind", flat=True)) == ["email"]
    assert normalise_device("webpush", json.dumps(SUBSCRIPTION)).startswith('{"endpoint":')
