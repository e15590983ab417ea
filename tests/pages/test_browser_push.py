"""Web Push from the settings page in headless Chromium: the service worker is
registered, "Turn on browser notifications" subscribes and registers the
subscription, an event is triggered and the local push peer receives and
DECRYPTS the expected payload.

Chromium's own push service is Google's, out of reach of a test, so the page's
``PushManager.subscribe`` is stubbed to hand back a subscription the local
peer made (its endpoint, its P-256 key and auth secret): everything after it
— the page's script, the devices API, the worker, the channel's encryption and
VAPID signature — is the real thing. Screenshot: ``settings-browser-push.png``.
``test_browser_push_subscribe.py`` runs Chromium's own subscribe against a
local stand-in for Google's GCM registration instead.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from notify import trigger
from notify.models import ContactPoint, Delivery
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.peers.http import running
from tests.peers.push import WebPushPeer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STUB = """
(subscription) => {
  const made = {
    endpoint: subscription.endpoint,
    toJSON: () => subscription,
    unsubscribe: async () => true,
  };
  let current = null;
  PushManager.prototype.subscribe = async function (options) {
    window.__subscribeOptions = options && options.applicationServerKey && options.applicationServerKey.length;
    current = made;
    return made;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
}
"""


@pytest.fixture
def webpush_peer():
    yield from running(WebPushPeer)


def test_turn_on_browser_notifications_and_receive_a_decrypted_push(
    page, login, live_server, screenshot, settings, make_user, make_rule, webpush_peer
):
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "browser": {
                "BACKEND": "channels.webpush.WebPushChannel",
                "OPTIONS": webpush_peer.channel_options(),
            },
        },
    }
    ann = make_user("ann")
    subscription = json.loads(webpush_peer.subscribe())
    page.context.grant_permissions(["notifications"], origin=live_server.url)
    page.add_init_script(f"({STUB})({json.dumps(subscription)})")

    login(page, "ann", "pw-ann")
    page.goto(f"{live_server.url}/settings/notifications/")
    control = page.locator("#browser-push")
    expect(control).to_be_visible()
    button = control.get_by_role("button", name="Turn on browser notifications")
    button.click()
    expect(control.locator(".push-status")).to_have_text(
        "Browser notifications are on for this browser."
    )
    expect(control).to_have_attribute("data-state", "on")
    screenshot(page, "settings-browser-push")

    workers = page.evaluate(
        "navigator.serviceWorker.getRegistrations()"
        ".then(rs => rs.map(r => (r.active || r.installing || r.waiting).scriptURL))"
    )
    assert [w.rsplit("/", 1)[-1] for w in workers] == ["push-sw.js"]
    assert page.evaluate("window.__subscribeOptions") == 65  # the VAPID public key's bytes
    point = ContactPoint.objects.get(user=ann, kind="webpush")
    assert json.loads(point.address)["endpoint"] == subscription["endpoint"]
    assert point.verified

    make_rule(channels=["browser"])
    trigger("order.shipped", {"order_id": "A7", "url": "https://shop.test/A7"}, recipients=[ann])
    run_until_idle()
    assert Delivery.objects.get().status == Status.SENT
    [push] = webpush_peer.pushes
    assert push.body["title"] == "Order A7 shipped"
    assert push.body["url"] == "https://shop.test/A7"

    control.get_by_role("button", name="Turn off browser notifications").click()
    expect(control).to_have_attribute("data-state", "off")
    assert not ContactPoint.objects.filter(user=ann, kind="webpush").exists()
