"""A push goes to every device of its recipient (``notify.delivery.devices``),
through the worker, counted at the local peers (tests/peers/push.py).

Each device is its own send and its own attempt row; a device the provider
says is gone is deleted without failing the others; a transient error on one
device retries that device only, so no device gets the push twice.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from notify import trigger
from notify.delivery.devices import sum_outcomes
from notify.delivery.outcomes import Target, done
from notify.models import ContactPoint, Delivery, DeliveryAttempt, Suppression
from notify.models.status import Status
from notify.preferences.devices import normalise_device, register_device
from notify.runtime.worker import run_until_idle
from tests.peers.h2 import running_h2
from tests.peers.http import running
from tests.peers.push import ApnsPeer, FcmPeer, WebPushPeer

Attempt = DeliveryAttempt.Outcome


@pytest.fixture
def fcm_peer():
    yield from running(FcmPeer)


@pytest.fixture
def apns_peer():
    yield from running_h2(ApnsPeer())


@pytest.fixture
def webpush_peer():
    yield from running(WebPushPeer)


def with_channel(settings, alias: str, backend: str, options: dict) -> None:
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            alias: {"BACKEND": backend, "OPTIONS": options},
        },
    }


def attempts(delivery: Delivery) -> Counter:
    """(device, outcome, error code) of every attempt row of ``delivery``."""
    return Counter(
        (a.sent.get("to"), a.outcome, a.error_code)
        for a in DeliveryAttempt.objects.filter(delivery=delivery)
    )


def devices_of(user, kind: str) -> set[str]:
    return set(ContactPoint.objects.filter(user=user, kind=kind).values_list("address", flat=True))


def test_fcm_every_device_gets_the_push_and_an_unregistered_one_is_pruned(
    settings, fcm_peer, make_user, make_rule
):
    with_channel(settings, "mobile", "channels.fcm.FcmChannel", fcm_peer.channel_options())
    alice, bob = make_user("alice"), make_user("bob")
    phone, tablet = fcm_peer.add_device(), fcm_peer.add_device()
    uninstalled = "fcm-" + "x" * 40  # registered once, unknown to FCM now
    for token in (phone, uninstalled, tablet):
        register_device(alice, "fcm", token)
    bobs = fcm_peer.add_device()
    register_device(bob, "fcm", bobs)
    make_rule(channels=["mobile"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice, bob])
    run_until_idle()

    # Counted at the receiver: each live device once, with the same notification.
    assert Counter(p.to for p in fcm_peer.pushes) == {phone: 1, tablet: 1, bobs: 1}
    assert {p.body["notification"]["title"] for p in fcm_peer.pushes} == {"Order A1 shipped"}
    delivery = Delivery.objects.get(notification__user=alice)
    assert delivery.status == Status.SENT, delivery.error_message
    assert delivery.provider_message_id in {p.message_id for p in fcm_peer.pushes}
    assert attempts(delivery) == {
        (tablet, Attempt.SENT, ""): 1,
        (uninstalled, Attempt.PERMANENT, "UNREGISTERED"): 1,
        (phone, Attempt.SENT, ""): 1,
    }
    assert devices_of(alice, "fcm") == {phone, tablet}  # the gone token is forgotten
    assert not Suppression.objects.exists()
    assert Delivery.objects.get(notification__user=bob).status == Status.SENT


@pytest.mark.parametrize("gone", ["cd" * 32, "not-hex-at-all-" * 5], ids=["410", "BadDeviceToken"])
def test_apns_a_gone_token_is_pruned_without_failing_the_other_devices(
    settings, apns_peer, make_user, make_rule, gone
):
    with_channel(settings, "ios", "channels.apns.ApnsChannel", apns_peer.channel_options())
    alice = make_user("alice")
    phone, ipad = apns_peer.add_device(), apns_peer.add_device()
    register_device(alice, "apns", phone)
    register_device(alice, "apns", ipad)
    # A token the page could not have registered (not hex): stored as a device would be.
    ContactPoint.objects.create(
        user=alice, kind="apns", address=gone, verified_at=timezone.now(), is_primary=False
    )
    make_rule(channels=["ios"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()

    assert Counter(p.to for p in apns_peer.pushes) == {phone: 1, ipad: 1}
    delivery = Delivery.objects.get()
    assert delivery.status == Status.SENT
    code = "Unregistered" if gone.startswith("cd") else "BadDeviceToken"
    assert attempts(delivery)[(gone, Attempt.PERMANENT, code)] == 1
    assert devices_of(alice, "apns") == {phone, ipad}


def test_webpush_every_browser_decrypts_the_push(settings, webpush_peer, make_user, make_rule):
    with_channel(
        settings, "browser", "channels.webpush.WebPushChannel", webpush_peer.channel_options()
    )
    alice = make_user("alice")
    laptop, desktop = webpush_peer.subscribe(), webpush_peer.subscribe()
    gone = webpush_peer.gone_address()  # the user cleared that browser's site data
    for address in (laptop, gone, desktop):
        register_device(alice, "webpush", normalise_device("webpush", address))
    make_rule(channels=["browser"])
    trigger("order.shipped", {"order_id": "A1", "carrier": "DHL"}, recipients=[alice])
    run_until_idle()

    endpoints = Counter(json.loads(p.to)["endpoint"] for p in webpush_peer.pushes)
    assert endpoints == {json.loads(laptop)["endpoint"]: 1, json.loads(desktop)["endpoint"]: 1}
    assert {p.body["body"] for p in webpush_peer.pushes} == {"It is on its way with DHL."}
    assert Delivery.objects.get().status == Status.SENT
    left = {json.loads(a)["endpoint"] for a in devices_of(alice, "webpush")}
    assert left == set(endpoints)


def test_a_transient_error_retries_only_the_device_that_did_not_get_it(
    settings, fcm_peer, make_user, make_rule
):
    """At the default retry policy: the 503's Retry-After (7 s) is a floor."""
    with_channel(settings, "mobile", "channels.fcm.FcmChannel", fcm_peer.channel_options())
    alice = make_user("alice")
    phone, tablet = fcm_peer.add_device(), fcm_peer.add_device()
    register_device(alice, "fcm", phone)
    register_device(alice, "fcm", tablet)  # the newest: tried first
    make_rule(channels=["mobile"])
    fcm_peer.fail_next(1)  # the first device's send gets 503 Retry-After: 7
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.PENDING
    assert delivery.next_attempt_at >= timezone.now() + timedelta(seconds=6)
    assert Counter(p.to for p in fcm_peer.pushes) == {phone: 1}
    assert attempts(delivery) == {
        (tablet, Attempt.TRANSIENT, "UNAVAILABLE"): 1,
        (phone, Attempt.SENT, ""): 1,
    }

    with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1), tick=True):
        run_until_idle()
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert delivery.attempts == 2
    assert Counter(p.to for p in fcm_peer.pushes) == {phone: 1, tablet: 1}  # never twice
    assert attempts(delivery)[(tablet, Attempt.SENT, "")] == 1


def test_when_every_device_is_gone_the_delivery_fails_and_nothing_is_left(
    settings, apns_peer, make_user, make_rule
):
    with_channel(settings, "ios", "channels.apns.ApnsChannel", apns_peer.channel_options())
    alice = make_user("alice")
    for token in ("ab" * 32, "cd" * 32):
        register_device(alice, "apns", token)
    make_rule(channels=["ios"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.FAILED
    assert delivery.error_code == "Unregistered"
    assert apns_peer.pushes == []
    assert devices_of(alice, "apns") == set()

    trigger("order.shipped", {"order_id": "A2"}, recipients=[alice])
    run_until_idle()
    later = Delivery.objects.exclude(pk=delivery.pk).get()
    assert later.status == Status.SKIPPED and later.skip_reason == "no_address"


# -- how the devices' outcomes add up (pure) ----------------------------------------------------


def part(status: str, outcome: str, **fields):
    return done(Target(1, 1), timezone.now(), status, outcome, **fields)


def test_sum_pending_wins_so_the_device_left_is_retried():
    soon = timezone.now() + timedelta(seconds=10)
    parts = [
        part(Status.SENT, Attempt.SENT, message_id="m1"),
        part(Status.PENDING, Attempt.TRANSIENT, next_attempt_at=soon + timedelta(seconds=50)),
        part(Status.PENDING, Attempt.TRANSIENT, next_attempt_at=soon),
        part(Status.FAILED, Attempt.PERMANENT, error_code="UNREGISTERED"),
    ]
    total = sum_outcomes(Target(1, 1), timezone.now(), parts)
    assert total.status == Status.PENDING and total.next_attempt_at == soon
    assert not total.refund_attempt
    assert [r.outcome for r in total.attempt_rows()] == [
        Attempt.SENT,
        Attempt.TRANSIENT,
        Attempt.TRANSIENT,
        Attempt.PERMANENT,
    ]


def test_sum_sent_when_one_device_had_it_else_the_first_error():
    sent = part(Status.SENT, Attempt.SENT, message_id="m2")
    gone = part(Status.FAILED, Attempt.PERMANENT, error_code="Unregistered")
    dead = part(Status.DEAD, Attempt.TRANSIENT, error_code="UNAVAILABLE")
    now = timezone.now()
    assert sum_outcomes(Target(1, 3), now, [gone, sent]).message_id == "m2"
    assert sum_outcomes(Target(1, 3), now, [gone, dead]).status == Status.DEAD
    assert sum_outcomes(Target(1, 3), now, [gone, gone]).error_code == "Unregistered"
    # Reached on an earlier attempt: sent, whatever the devices left say.
    assert sum_outcomes(Target(1, 3), now, [gone], reached_before=True).status == Status.SENT
    nothing_left = sum_outcomes(Target(1, 3), now, [], reached_before=True)
    assert nothing_left.status == Status.SENT and nothing_left.attempt_rows() == []


def test_sum_of_one_device_is_that_device_outcome():
    only = part(Status.PENDING, Attempt.TRANSIENT, refund_attempt=True)
    assert sum_outcomes(Target(1, 1), timezone.now(), [only]) is only
