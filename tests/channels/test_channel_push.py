"""The push channels (FCM, APNs, Web Push) against local peers that speak their
protocols and check their auth (tests/peers/push.py).

The shared channel contract runs against each; then what is particular to
push: the payloads, the error mapping (gone tokens flagged for pruning, quota
and availability retried after Retry-After, refused credentials a
configuration error), the Web Push payload decrypted by the peer.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from channels.apns import ApnsChannel
from channels.base import (
    ChannelConfigurationError,
    InvalidRecipient,
    OutgoingMessage,
    PermanentError,
    TransientError,
)
from channels.fcm import FcmChannel
from channels.webpush import WebPushChannel, vapid_public_key
from notify import trigger
from notify.models import ContactPoint, Delivery, Suppression
from notify.models.status import Status
from notify.preferences.devices import register_device
from notify.registry import describe
from notify.runtime.worker import run_until_idle
from tests.channel_contract import ChannelContract, Received
from tests.peers.h2 import running_h2
from tests.peers.http import Reply, running
from tests.peers.push import ApnsPeer, FcmPeer, WebPushPeer, fcm_error


def message(to: str, **fields) -> OutgoingMessage:
    fields.setdefault("delivery_id", 701)
    fields.setdefault("channel", "push")
    fields.setdefault("subject", "Order A1 shipped")
    fields.setdefault("text", "It is on its way with DHL.")
    fields.setdefault("extra", {"url": "https://shop.test/A1", "badge": 3})
    return OutgoingMessage(to=to, **fields)


@pytest.fixture
def fcm_peer():
    yield from running(FcmPeer)


@pytest.fixture
def apns_peer():
    yield from running_h2(ApnsPeer())


@pytest.fixture
def webpush_peer():
    yield from running(WebPushPeer)


class PeerView:
    """The contract's view of a push channel and its peer."""

    def __init__(self, peer, channel_class, good: str, rejected: str):
        self.peer = peer
        self.channel_class = channel_class
        self.good_address = good
        self.rejected_address = rejected

    def make_channel(self):
        return self.channel_class("push", **self.peer.channel_options())

    def fail_next(self, count: int) -> None:
        self.peer.fail_next(count)

    def down(self) -> None:
        self.peer.stop()

    def up(self) -> None:
        self.peer.start()

    def received(self) -> list[Received]:
        return [Received(to=p.to, message_id=p.message_id) for p in self.peer.pushes]

    def connections(self) -> int:
        return self.peer.connections


class TestFcmContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, fcm_peer):
        return PeerView(fcm_peer, FcmChannel, fcm_peer.add_device(), "fcm-unknown-token")


class TestApnsContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, apns_peer):
        return PeerView(apns_peer, ApnsChannel, apns_peer.add_device(), "ab" * 32)


class TestWebPushContract(ChannelContract):
    @pytest.fixture
    def channel_peer(self, webpush_peer):
        return PeerView(
            webpush_peer, WebPushChannel, webpush_peer.subscribe(), webpush_peer.gone_address()
        )


# -- FCM ----------------------------------------------------------------------------------


def fcm(peer: FcmPeer, **options) -> FcmChannel:
    return FcmChannel("push", **peer.channel_options(**options))


def test_fcm_sends_the_notification_with_link_and_badge_after_one_token_exchange(fcm_peer):
    token = fcm_peer.add_device()
    channel = fcm(fcm_peer)
    with channel:
        result = channel.send(message(token))
        channel.send(message(token, delivery_id=702))
    assert fcm_peer.token_requests == 1  # the bearer token is kept
    push = fcm_peer.pushes[0]
    assert result.message_id == push.message_id
    assert push.body["notification"] == {
        "title": "Order A1 shipped",
        "body": "It is on its way with DHL.",
    }
    assert push.body["data"] == {"delivery_id": "701", "url": "https://shop.test/A1"}
    assert push.body["apns"]["payload"]["aps"]["badge"] == 3
    assert push.body["android"]["notification"]["notification_count"] == 3
    assert push.body["webpush"]["fcm_options"]["link"] == "https://shop.test/A1"


def test_fcm_unregistered_token_is_gone(fcm_peer):
    with fcm(fcm_peer) as channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message("fcm-unknown"))
    assert caught.value.gone and caught.value.code == "UNREGISTERED"


@pytest.mark.parametrize(("status", "code"), [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")])
def test_fcm_quota_and_unavailable_retry_after(fcm_peer, status, code):
    fcm_peer.fail_next(1, status=status)
    with fcm(fcm_peer) as channel, pytest.raises(TransientError) as caught:
        channel.send(message(fcm_peer.add_device()))
    assert caught.value.code == code and caught.value.retry_after == 7


def test_fcm_quota_exceeded_error_code_is_transient(fcm_peer):
    reply = fcm_error(429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED")
    fcm_peer.fail_messages([reply])
    with fcm(fcm_peer) as channel, pytest.raises(TransientError) as caught:
        channel.send(message(fcm_peer.add_device()))
    assert caught.value.code == "QUOTA_EXCEEDED"


def test_fcm_invalid_argument_is_permanent_not_gone(fcm_peer):
    with fcm(fcm_peer) as channel, pytest.raises(PermanentError) as caught:
        channel.send(message(fcm_peer.add_device(), subject=""))
    assert not isinstance(caught.value, InvalidRecipient)


def test_fcm_a_key_the_token_endpoint_does_not_know_is_a_configuration_error(fcm_peer):
    other = FcmPeer()  # another service account: its key does not match
    credentials = {**other.credentials, "token_uri": fcm_peer.credentials["token_uri"]}
    channel = fcm(fcm_peer, CREDENTIALS=credentials)
    with channel, pytest.raises(ChannelConfigurationError, match="refused the service account"):
        channel.send(message(fcm_peer.add_device()))


def test_fcm_wrong_project_is_a_configuration_error(fcm_peer):
    channel = fcm(fcm_peer, PROJECT_ID="someone-else")
    with channel, pytest.raises(ChannelConfigurationError, match="PERMISSION_DENIED"):
        channel.send(message(fcm_peer.add_device()))


def test_fcm_a_revoked_bearer_token_is_renewed_once(fcm_peer):
    token = fcm_peer.add_device()
    channel = fcm(fcm_peer)
    with channel:
        channel.send(message(token))
        fcm_peer.access_tokens.clear()  # revoked early
        channel.send(message(token))
    assert fcm_peer.token_requests == 2 and len(fcm_peer.pushes) == 2


def test_fcm_credentials_are_checked_at_start_up():
    with pytest.raises(ChannelConfigurationError, match="CREDENTIALS"):
        FcmChannel("push").check_configuration()
    with pytest.raises(ChannelConfigurationError, match="lacks private_key"):
        FcmChannel(
            "push", CREDENTIALS={"client_email": "a@b", "project_id": "p"}
        ).check_configuration()


def test_fcm_credentials_from_a_file(tmp_path, fcm_peer):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(fcm_peer.credentials))
    channel = FcmChannel("push", CREDENTIALS_FILE=str(path), BASE_URL=fcm_peer.base_url)
    with channel:
        channel.send(message(fcm_peer.add_device()))
    assert len(fcm_peer.pushes) == 1


# -- APNs ---------------------------------------------------------------------------------


def apns(peer: ApnsPeer, **options) -> ApnsChannel:
    return ApnsChannel("push", **peer.channel_options(**options))


def test_apns_sends_over_http2_with_topic_push_type_and_badge(apns_peer):
    token = apns_peer.add_device()
    with apns(apns_peer) as channel:
        result = channel.send(message(token))
    [push] = apns_peer.pushes
    assert result.message_id == push.message_id
    assert push.request.header("apns-topic") == ApnsPeer.topic
    assert push.request.header("apns-push-type") == "alert"
    assert push.body["aps"] == {
        "alert": {"title": "Order A1 shipped", "body": "It is on its way with DHL."},
        "badge": 3,
    }
    assert push.body["url"] == "https://shop.test/A1"


@pytest.mark.parametrize(
    ("token", "code"), [("ab" * 32, "Unregistered"), ("zz" * 32, "BadDeviceToken")]
)
def test_apns_gone_tokens(apns_peer, token, code):
    with apns(apns_peer) as channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(token))
    assert caught.value.gone and caught.value.code == code


def test_apns_bad_device_token_from_the_service_is_gone(apns_peer):
    apns_peer.fail_messages([Reply(400, {"reason": "BadDeviceToken"})])
    with apns(apns_peer) as channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(apns_peer.add_device()))
    assert caught.value.gone and caught.value.code == "BadDeviceToken"


@pytest.mark.parametrize("status", [429, 503])
def test_apns_too_many_requests_and_unavailable_retry_after(apns_peer, status):
    apns_peer.fail_next(1, status=status)
    with apns(apns_peer) as channel, pytest.raises(TransientError) as caught:
        channel.send(message(apns_peer.add_device()))
    assert caught.value.retry_after == 5


def test_apns_a_wrong_key_is_a_configuration_error(apns_peer):
    other = ApnsPeer()
    channel = apns(apns_peer, KEY=other.signing_key)
    with channel, pytest.raises(ChannelConfigurationError, match="InvalidProviderToken"):
        channel.send(message(apns_peer.add_device()))


def test_apns_wrong_topic_means_the_token_is_not_for_this_app(apns_peer):
    channel = apns(apns_peer, TOPIC="com.other.app")
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(apns_peer.add_device()))
    assert caught.value.gone and caught.value.code == "DeviceTokenNotForTopic"


def test_apns_options_are_checked_at_start_up():
    with pytest.raises(ChannelConfigurationError, match=r"KEY .* KEY_ID, TEAM_ID, TOPIC"):
        ApnsChannel("push").check_configuration()


# -- Web Push ---------------------------------------------------------------------------------


def webpush(peer: WebPushPeer, **options) -> WebPushChannel:
    return WebPushChannel("push", **peer.channel_options(**options))


def test_webpush_payload_is_encrypted_and_decrypted_by_the_peer(webpush_peer):
    address = webpush_peer.subscribe()
    with webpush(webpush_peer) as channel:
        result = channel.send(message(address))
    [push] = webpush_peer.pushes
    assert result.message_id == push.message_id
    assert push.body == {
        "title": "Order A1 shipped",
        "body": "It is on its way with DHL.",
        "delivery_id": 701,
        "url": "https://shop.test/A1",
        "badge": 3,
    }
    assert b"Order A1" not in push.request.body  # encrypted on the wire
    assert push.request.header("urgency") == "normal"
    assert int(push.request.header("ttl")) == 86400


def test_webpush_gone_subscription(webpush_peer):
    with webpush(webpush_peer) as channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(webpush_peer.gone_address()))
    assert caught.value.gone and caught.value.code == "410"


def test_webpush_a_vapid_key_the_page_did_not_subscribe_with_is_a_configuration_error(
    webpush_peer,
):
    other = WebPushPeer()
    channel = webpush(webpush_peer, VAPID_PRIVATE_KEY=other.vapid_private_key)
    with channel, pytest.raises(ChannelConfigurationError, match="VAPID"):
        channel.send(message(webpush_peer.subscribe()))
    assert webpush_peer.refusals == ["unexpected application server key"]


def test_webpush_retry_after(webpush_peer):
    webpush_peer.fail_next(1, status=429)
    with webpush(webpush_peer) as channel, pytest.raises(TransientError) as caught:
        channel.send(message(webpush_peer.subscribe()))
    assert caught.value.retry_after == 9


@pytest.mark.parametrize("address", ["not json", '{"endpoint": "https://x.test"}'])
def test_webpush_a_broken_subscription_is_gone(webpush_peer, address):
    with webpush(webpush_peer) as channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(address))
    assert caught.value.gone


def test_webpush_endpoints_outside_the_push_services_are_refused(webpush_peer):
    sub = json.loads(webpush_peer.subscribe())
    sub["endpoint"] = "https://169.254.169.254/latest"
    channel = WebPushChannel("push", **{**webpush_peer.channel_options(), "ALLOWED_HOSTS": None})
    with channel, pytest.raises(InvalidRecipient) as caught:
        channel.send(message(json.dumps(sub)))
    assert caught.value.code == "url_refused"
    channel = WebPushChannel("push", VAPID_PRIVATE_KEY=webpush_peer.vapid_private_key)
    assert (
        channel.url_policy.allowed_hosts
        and "fcm.googleapis.com" in channel.url_policy.allowed_hosts
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/wp/abc:APA91b",
        "https://jmt17.google.com/fcm/send/abc:APA91b",  # what Chromium 156 hands the page
        "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
        "https://web.push.apple.com/QGuQ",
    ],
)
def test_webpush_the_endpoints_browsers_give_pass_the_default_policy(webpush_peer, endpoint):
    channel = WebPushChannel("push", VAPID_PRIVATE_KEY=webpush_peer.vapid_private_key)
    assert channel.url_policy.check(endpoint, "webpush") == endpoint


def test_vapid_public_key_is_the_application_server_key(webpush_peer):
    assert vapid_public_key(webpush_peer.vapid_private_key) == webpush_peer.vapid_public_key


def test_webpush_options_are_checked_at_start_up(webpush_peer):
    with pytest.raises(ChannelConfigurationError, match="VAPID_PRIVATE_KEY"):
        WebPushChannel("push").check_configuration()
    with pytest.raises(ChannelConfigurationError, match="VAPID_SUBJECT"):
        webpush(webpush_peer, VAPID_SUBJECT="ops@example.com").check_configuration()


# -- end to end: a rule, the worker, the user's devices ------------------------------------------


def with_channel(settings, alias: str, backend: str, options: dict) -> None:
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            alias: {"BACKEND": backend, "OPTIONS": options},
        },
    }


def test_the_push_part_with_badge_and_deep_link_reaches_the_device_through_the_worker(
    settings, fcm_peer, make_user, make_rule
):
    with_channel(settings, "mobile", "channels.fcm.FcmChannel", fcm_peer.channel_options())
    assert describe("mobile") == ("fcm", "push")
    alice = make_user("alice")
    token = fcm_peer.add_device()
    register_device(alice, "fcm", token)
    make_rule(event_type="comment.posted", message="comment_posted", channels=["inapp"])
    trigger("comment.posted", {"title": "Q3 plan", "comment": "Looks good"}, recipients=[alice])
    run_until_idle()  # one unread inbox item
    make_rule(channels=["mobile"])
    trigger("order.shipped", {"order_id": "A1", "url": "https://shop.test/A1"}, recipients=[alice])
    run_until_idle()

    delivery = Delivery.objects.get(channel="mobile")
    assert delivery.status == Status.SENT, delivery.error_message
    [push] = fcm_peer.pushes
    assert push.to == token
    assert push.body["notification"] == {"title": "Order A1 shipped", "body": "It is on its way."}
    assert push.body["data"]["url"] == "https://shop.test/A1"
    assert push.body["apns"]["payload"]["aps"]["badge"] == 1
    assert delivery.provider_message_id == push.message_id


def test_a_gone_token_is_pruned_and_the_live_device_still_gets_the_push(
    settings, apns_peer, make_user, make_rule
):
    """Every device of the user is sent to (tests/channels/test_push_devices.py)."""
    with_channel(settings, "ios", "channels.apns.ApnsChannel", apns_peer.channel_options())
    alice = make_user("alice")
    live = apns_peer.add_device()
    register_device(alice, "apns", live)
    register_device(alice, "apns", "cd" * 32)  # the newest, and unknown to APNs: uninstalled
    make_rule(channels=["ios"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=[alice])
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.SENT
    assert list(ContactPoint.objects.filter(user=alice).values_list("address", flat=True)) == [live]
    assert not Suppression.objects.exists()  # forgotten, not suppressed
    assert [p.to for p in apns_peer.pushes] == [live]

    trigger("order.shipped", {"order_id": "A2"}, recipients=[alice])
    run_until_idle()  # the next push goes to the device that is left, once
    assert [p.to for p in apns_peer.pushes] == [live, live]


def test_webpush_end_to_end_the_peer_decrypts_the_push(
    settings, webpush_peer, make_user, make_rule
):
    with_channel(
        settings, "browser", "channels.webpush.WebPushChannel", webpush_peer.channel_options()
    )
    alice = make_user("alice")
    address = webpush_peer.subscribe()
    ContactPoint.objects.create(
        user=alice, kind="webpush", address=address, verified_at=timezone.now()
    )
    make_rule(channels=["browser"])
    trigger("order.shipped", {"order_id": "A1", "carrier": "DHL"}, recipients=[alice])
    run_until_idle()

    assert Delivery.objects.get().status == Status.SENT
    [push] = webpush_peer.pushes
    assert push.body["title"] == "Order A1 shipped"
    assert push.body["body"] == "It is on its way with DHL."
    assert push.body["url"].endswith("/inbox/")  # no url in the event: the inbox
    assert push.body["badge"] == 0


def test_long_text_is_shortened_to_fit_the_providers_payload_limits(webpush_peer):
    with webpush(webpush_peer) as channel:
        channel.send(message(webpush_peer.subscribe(), subject="T" * 500, text="B" * 5000))
    [push] = webpush_peer.pushes
    assert len(push.body["title"]) == 200 and push.body["title"].endswith("…")
    assert len(push.body["body"]) == 1000
