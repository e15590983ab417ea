"""The embeddable bell in a browser: a plain page of a sample host app
(``tests/bell_host.py``) includes ``{% notify_bell %}``; an event sent to the
HTTP API shows a live badge and the item in the popover; mark read updates the
badge; the keyboard and screen-reader parts work; and the same bell on another
origin (another loopback port) works with the signed token and CORS."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.template import engines
from django.utils import timezone
from playwright.sync_api import expect

from notify.models import ApiKey, Event, MessageTemplate, Notification
from notify.runtime.worker import run_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.urls("tests.bell_host")]

INAPP = (
    "Order {{ payload.order_id }} shipped\n"
    "It is on its way.\n"
    "action: Track parcel | /track/{{ payload.order_id }}\n"
)


@pytest.fixture
def shop(make_user, make_rule):
    """Alice, a rule to her inbox with an action button, and an API key."""
    alice = make_user("alice", first_name="Alice")
    MessageTemplate.objects.create(message="order_shipped", part="inapp", body=INAPP)
    make_rule(channels=["inapp"])
    _, key = ApiKey.issue("shop")
    return alice, key


def send_event(base_url: str, key: str, order_id: str, user_id: int) -> None:
    """POST /api/v1/events, as another service would, then let the worker run."""
    request = urllib.request.Request(
        f"{base_url}/api/v1/events",
        data=json.dumps(
            {"type": "order.shipped", "payload": {"order_id": order_id}, "recipients": [user_id]}
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    run_until_idle()


def test_the_bell_on_a_host_page_goes_live_and_marks_read(
    page, live_server, login, shop, screenshot
):
    alice, key = shop
    login(page, "alice", "pw-alice")
    page.goto(f"{live_server.url}/host/")
    bell = page.locator("notify-inbox .bell")
    badge = page.locator("notify-inbox .badge")
    bell.wait_for()
    assert bell.get_attribute("aria-haspopup") == "dialog"
    assert bell.get_attribute("aria-expanded") == "false"
    page.wait_for_function(
        "document.querySelector('notify-inbox').shadowRoot.querySelector('.empty').hidden === false"
    )
    assert badge.is_hidden()

    send_event(live_server.url, key, "B-7", alice.pk)
    # Django's test server is WSGI: the stream is long-polled (retry: 2 s).
    badge.wait_for(state="visible", timeout=15_000)
    assert badge.inner_text() == "1"
    assert bell.get_attribute("aria-label") == "Notifications, 1 unread"
    status = page.locator("notify-inbox [role=status]")
    assert status.get_attribute("aria-live") == "polite"
    screenshot(page, "bell-badge-live", full_page=False)

    bell.click()
    panel = page.locator("notify-inbox [role=dialog]")
    panel.wait_for()
    assert bell.get_attribute("aria-expanded") == "true"
    item = panel.locator(".item").first
    assert "Order B-7 shipped" in item.inner_text()
    assert "It is on its way." in item.inner_text()
    action = item.locator("a.action")
    assert action.inner_text() == "Track parcel"
    assert action.get_attribute("href") == "/track/B-7"
    # The popover's first item has the focus (roving tabindex).
    assert page.evaluate(
        "document.querySelector('notify-inbox').shadowRoot.activeElement.classList.contains('item')"
    )
    screenshot(page, "bell-popover", full_page=False)

    item.get_by_role("button", name="Mark read").click()
    badge.wait_for(state="hidden")
    assert bell.get_attribute("aria-label") == "Notifications"
    assert Notification.objects.get(user=alice).read_at is not None
    assert "unread" not in (item.get_attribute("class") or "")
    screenshot(page, "bell-marked-read", full_page=False)

    # A second item arrives while the popover is open: on top, announced.
    send_event(live_server.url, key, "C-8", alice.pk)
    panel.locator(".item", has_text="Order C-8 shipped").wait_for(timeout=15_000)
    assert panel.locator(".item").first.inner_text().startswith("Unread: Order C-8") or (
        "Order C-8" in panel.locator(".item").first.inner_text()
    )
    page.wait_for_function(
        "document.querySelector('notify-inbox').shadowRoot"
        ".querySelector('[role=status]').textContent.length > 0"
    )

    # Archive takes it out of the list and leaves the count at zero.
    panel.locator(".item", has_text="Order C-8").get_by_role("button", name="Archive").click()
    panel.locator(".item", has_text="Order C-8").wait_for(state="detached")
    badge.wait_for(state="hidden")

    # Escape closes and gives the focus back to the bell.
    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")
    assert bell.get_attribute("aria-expanded") == "false"
    assert page.evaluate(
        "document.querySelector('notify-inbox').shadowRoot.activeElement.classList.contains('bell')"
    )


def test_keyboard_focus_stays_in_the_popover_and_arrows_rove(
    page, live_server, login, shop, screenshot
):
    alice, _ = shop
    make_inbox(alice, 3)
    login(page, "alice", "pw-alice")
    page.emulate_media(color_scheme="dark")  # the defaults follow prefers-color-scheme
    page.goto(f"{live_server.url}/host/")
    page.locator("notify-inbox .badge").wait_for(state="visible")
    page.locator("notify-inbox .bell").focus()
    page.keyboard.press("Enter")
    panel = page.locator("notify-inbox [role=dialog]")
    panel.wait_for()
    active = "document.querySelector('notify-inbox').shadowRoot.activeElement"
    first_id = page.evaluate(f"{active}.dataset.id")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(f"{active}.dataset.id") != first_id
    assert page.evaluate(f"{active}.getAttribute('tabindex')") == "0"
    page.keyboard.press("Home")
    assert page.evaluate(f"{active}.dataset.id") == first_id
    panel_colour = page.evaluate(
        "getComputedStyle(document.querySelector('notify-inbox').shadowRoot"
        ".querySelector('.panel')).backgroundColor"
    )
    assert panel_colour == "rgb(22, 27, 34)"
    screenshot(page, "bell-keyboard-dark", full_page=False)
    for _ in range(40):  # Tab never leaves the popover
        page.keyboard.press("Tab")
        inside = page.evaluate(f"!!{active} && !!{active}.closest('[role=dialog]')")
        assert inside
    # Mark all read: the badge goes, the items stay (read), the focus stays in the popover.
    panel.get_by_role("button", name="Mark all read").click()
    page.locator("notify-inbox .badge").wait_for(state="hidden")
    # The badge goes first; the list is then fetched again (the items read).
    expect(panel.locator(".item")).to_have_count(3)
    expect(panel.locator(".item.unread")).to_have_count(0)
    assert not Notification.objects.filter(user=alice, read_at__isnull=True).exists()
    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")


def make_inbox(user, count: int) -> list[Notification]:
    from notify.models import Category

    category = Category.objects.get(key="orders")
    start = timezone.now() - timedelta(hours=2)
    return [
        Notification.objects.create(
            event=Event.objects.create(type="order.shipped", payload={"n": n}),
            user=user,
            category=category,
            title=f"Old order {n}",
            body="Delivered.",
            inbox_at=start + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def test_infinite_scroll_loads_every_page_once(page, live_server, login, shop, screenshot):
    alice, _ = shop
    [*_, newest] = make_inbox(alice, 45)
    newest.title = '<img src=x onerror="window.pwned=1">'  # markup stays text
    newest.save()
    login(page, "alice", "pw-alice")
    page.goto(f"{live_server.url}/host/")
    page.locator("notify-inbox .badge").wait_for(state="visible")
    assert page.locator("notify-inbox .badge").inner_text() == "45"
    page.locator("notify-inbox .bell").click()
    items = page.locator("notify-inbox .item")
    items.first.wait_for()
    for _ in range(10):
        page.evaluate(
            "{ const l = document.querySelector('notify-inbox').shadowRoot.querySelector('.list');"
            " l.scrollTop = l.scrollHeight; }"
        )
        page.wait_for_timeout(300)
        if items.count() == 45:
            break
    titles = page.evaluate(
        "[...document.querySelector('notify-inbox').shadowRoot.querySelectorAll('.item .title')]"
        ".map(t => t.textContent)"
    )
    assert len(titles) == 45 == len(set(titles))
    assert titles[0] == 'Unread: <img src=x onerror="window.pwned=1">'
    assert page.evaluate("window.pwned") is None
    screenshot(page, "bell-scrolled", full_page=False)


# -- another origin ---------------------------------------------------------------------


@pytest.fixture
def other_origin(tmp_path):
    """A static file server on another loopback port: the host app's other site."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_bell_on_another_origin_works_with_the_signed_token(
    page, live_server, shop, other_origin, settings, screenshot
):
    alice, key = shop
    folder, origin = other_origin
    settings.NOTIFY = {**settings.NOTIFY, "BELL_ALLOWED_ORIGINS": [origin]}
    # The host app renders the tag for the signed-in user: the token goes in the page.
    tag = (
        engines["django"]
        .from_string("{% load notify_bell %}{% notify_bell api_url=api_url %}")
        .render({"user": alice, "api_url": live_server.url})
    )
    assert 'token="' in tag
    (folder / "index.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Other site</title>'
        "<style>body{font:15px system-ui;margin:0}header{display:flex;justify-content:"
        "space-between;padding:8px 24px;background:#0b3d2e;color:#fff}"
        "notify-inbox{--notify-bell-fg:#fff;--notify-accent:#1a7f37;--notify-badge-bg:#bf8700}"
        f"</style></head><body><header><strong>Other site</strong>{tag}</header></body></html>"
    )
    page.goto(f"{origin}/index.html")  # no session cookie on this origin
    bell = page.locator("notify-inbox .bell")
    page.wait_for_function(
        "document.querySelector('notify-inbox') && document.querySelector('notify-inbox')"
        ".shadowRoot.querySelector('.empty').hidden === false"
    )
    send_event(live_server.url, key, "X-1", alice.pk)
    badge = page.locator("notify-inbox .badge")
    badge.wait_for(state="visible", timeout=15_000)
    assert badge.inner_text() == "1"
    bell.click()
    item = page.locator("notify-inbox .item").first
    item.wait_for()
    assert "Order X-1 shipped" in item.inner_text()
    screenshot(page, "bell-cross-origin", full_page=False)
    item.get_by_role("button", name="Mark read").click()
    badge.wait_for(state="hidden")
    assert Notification.objects.get(user=alice).read_at is not None


def test_another_origin_not_in_the_setting_gets_nothing(page, live_server, shop, other_origin):
    alice, _ = shop
    folder, origin = other_origin
    make_inbox(alice, 2)
    tag = (
        engines["django"]
        .from_string("{% load notify_bell %}{% notify_bell api_url=api_url %}")
        .render({"user": alice, "api_url": live_server.url})
    )
    (folder / "index.html").write_text(f"<!doctype html><body>{tag}</body>")
    page.goto(f"{origin}/index.html")
    page.wait_for_function(
        "document.querySelector('notify-inbox') && document.querySelector('notify-inbox')"
        ".shadowRoot.querySelector('[role=status]').textContent.includes('could not be loaded')"
    )
    assert page.locator("notify-inbox .badge").is_hidden()


def test_a_refused_token_tells_the_page(page, live_server, shop, other_origin, settings):
    _, _ = shop
    folder, origin = other_origin
    settings.NOTIFY = {**settings.NOTIFY, "BELL_ALLOWED_ORIGINS": [origin]}
    (folder / "index.html").write_text(
        "<!doctype html><body><script>"
        "document.addEventListener('notify-inbox:token-expired', () => { window.expired = true; });"
        f'</script><script src="{live_server.url}/static/notify/notify-inbox.js"></script>'
        f'<notify-inbox api="{live_server.url}/api/v1" token="stale"></notify-inbox></body>'
    )
    page.goto(f"{origin}/index.html")
    page.wait_for_function("window.expired === true")
