"""Web Push with a REAL browser subscription: Chromium's ``PushManager.subscribe``
runs unstubbed on the settings page, and the local push peer decrypts the
push with the keys Chromium generated.

What is real and what stands in:

* real: the settings page's script and service worker (``push.js``,
  ``push-sw.js``), the applicationServerKey the devices API derives from the
  channel's VAPID key, Chromium's subscribe (its GCM client, its P-256 key
  pair and auth secret, the endpoint it builds), the ``PushSubscription`` JSON
  the page posts to the devices API, the worker, the channel's RFC 8291
  encryption for the browser's ``p256dh``/``auth`` and its VAPID signature
  (audience: the real endpoint's origin), and the default URL policy (https,
  known push service hosts);
* standing in: Google's GCM check-in and registration
  (``tests/peers/gcm.py``, through Chromium's ``--gcm-checkin-url`` and
  ``--gcm-registration-url``), and the push service at the endpoint: the
  channel's ``requests`` session has the endpoint's origin mounted onto the
  local Web Push peer (``RouteToPeer``), which checks the VAPID JWT and
  decrypts with the browser's private key, read from the profile's GCM key
  store. The last hop (push service to browser, over Google's MCS) is not
  played: the browser does not receive the push.

A persistent profile is needed: Chromium offers no push in an off-the-record
context (Playwright's ``new_context``). Screenshot: ``settings-browser-push-real.png``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from channels.webpush import WebPushChannel, vapid_public_key
from notify import trigger
from notify.models import ContactPoint, Delivery
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.browser import CHROMIUM_ARGS, chromium_path
from tests.peers.gcm import GcmRegistrationPeer, browser_private_key, unb64url
from tests.peers.http import running
from tests.peers.push import RouteToPeer, WebPushPeer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def gcm_peer():
    yield from running(GcmRegistrationPeer)


@pytest.fixture
def webpush_peer():
    yield from running(WebPushPeer)


@pytest.fixture
def profile_page(gcm_peer):
    """A page in a persistent Chromium profile whose GCM client talks to ``gcm_peer``."""
    executable = chromium_path()
    if executable is None:
        message = "Chromium is not installed: run `apt-get install chromium` (Debian)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # see tests.browser.browser
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *gcm_peer.chromium_args()],
                viewport={"width": 1280, "height": 900},
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.profile = Path(profile)
            yield page
            context.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def test_chromium_subscribes_for_real_and_the_peer_decrypts_with_the_browser_keys(
    profile_page,
    login,
    live_server,
    screenshot,
    settings,
    make_user,
    make_rule,
    gcm_peer,
    webpush_peer,
    monkeypatch,
):
    page = profile_page
    options = {  # the README's options: the default URL policy (https, push service hosts)
        "VAPID_PRIVATE_KEY": webpush_peer.vapid_private_key,
        "VAPID_SUBJECT": "mailto:ops@example.com",
    }
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "browser": {"BACKEND": "channels.webpush.WebPushChannel", "OPTIONS": options},
        },
    }
    ann = make_user("ann")
    page.context.grant_permissions(["notifications"], origin=live_server.url)
    login(page, "ann", "pw-ann")
    page.goto(f"{live_server.url}/settings/notifications/")
    control = page.locator("#browser-push")
    control.get_by_role("button", name="Turn on browser notifications").click()
    expect(control.locator(".push-status")).to_have_text(
        "Browser notifications are on for this browser."
    )
    screenshot(page, "settings-browser-push-real")

    # Chromium registered with the (local) GCM for this origin, with our VAPID key.
    [registration] = gcm_peer.web_push_registrations()
    assert gcm_peer.checkins >= 1
    assert registration["sender"] == vapid_public_key(webpush_peer.vapid_private_key)
    assert unquote(registration["X-subtype"]).startswith(f"wp:{live_server.url}/#")
    # The page posted the subscription Chromium made: its endpoint and its keys.
    point = ContactPoint.objects.get(user=ann, kind="webpush")
    subscription = json.loads(point.address)
    endpoint = urlsplit(subscription["endpoint"])
    assert endpoint.scheme == "https" and endpoint.path.endswith(registration["token"])
    browser_json = page.evaluate(
        "navigator.serviceWorker.getRegistration('/static/notify/')"
        ".then(r => r.pushManager.getSubscription()).then(s => s.toJSON())"
    )
    assert browser_json["endpoint"] == subscription["endpoint"]
    assert browser_json["keys"] == subscription["keys"]
    assert len(unb64url(subscription["keys"]["p256dh"])) == 65
    assert len(unb64url(subscription["keys"]["auth"])) == 16

    # The peer stands in for the push service at that endpoint, with the browser's key.
    key = browser_private_key(page.profile, subscription["keys"]["p256dh"])
    webpush_peer.adopt(point.address, key)
    webpush_peer.audience = f"https://{endpoint.netloc}"
    opened = WebPushChannel.open

    def open_routed(channel: WebPushChannel) -> None:
        opened(channel)
        assert channel.session is not None
        channel.session.mount(f"https://{endpoint.netloc}/", RouteToPeer(webpush_peer))

    monkeypatch.setattr(WebPushChannel, "open", open_routed)
    make_rule(channels=["browser"])
    trigger("order.shipped", {"order_id": "A7", "url": "https://shop.test/A7"}, recipients=[ann])
    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.SENT, delivery.error_message
    assert webpush_peer.refusals == []  # the VAPID JWT was good for the real endpoint's origin
    [push] = webpush_peer.pushes
    assert push.body == {
        "title": "Order A7 shipped",
        "body": "It is on its way.",
        "url": "https://shop.test/A7",
        "badge": 0,
        "delivery_id": delivery.pk,
    }
    assert push.request.header("content-encoding") == "aes128gcm"
