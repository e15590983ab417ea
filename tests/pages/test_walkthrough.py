"""The first hour, as a newcomer lives it, in headless Chromium against a real
``notify run`` on a port that is not 8000 (issue 15, "Done when"):

home page → log in → settings → an event triggered over the HTTP API → the
inbox and the header's badge update live (the badge on another page) → the
email in ``/dev/outbox/`` → its unsubscribe link, on that port → resubscribe.

Screenshots: ``artifacts/screenshots/walkthrough-*.png``. Timings are the
defaults (no setting is shortened): the server is started the way ``make run``
starts it, with demo data and an API key made by the management commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from html import unescape

import pytest

from tests.runtime.test_embedded_run import ROOT, free_port, get, manage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

UNSUBSCRIBE = re.compile(r"https?://[^\s<>\"')]+/unsubscribe/[^\s<>\"')]+")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`make run PORT=<free port>`: migrate, demo data, then `notify run`."""
    var = tmp_path_factory.mktemp("walkthrough") / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "NOTIFY_EMAIL_BACKEND", "NOTIFY_SITE_URL", "PORT"}
    }
    env.update(NOTIFY_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="notify.project.settings")
    manage(env, "migrate", "--no-input")
    demo = manage(env, "notify", "demo", "--if-embedded").stdout
    passwords = dict(re.findall(r"^\s+(\w+)\s+/ (\S+)", demo, re.M))
    assert {"admin", "alice"} <= set(passwords), demo
    token = manage(env, "notify", "apikey", "create", "walkthrough").stdout.strip().splitlines()[-1]
    alice_id = int(
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as g; "
            "print(g().objects.get(username='alice').pk)",
        ).stdout.split()[-1]
    )
    port = free_port()
    assert port != 8000
    process = subprocess.Popen(
        [sys.executable, "manage.py", "notify", "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not answer /healthz within 60 s")
                time.sleep(0.2)
        yield {"base": base, "passwords": passwords, "token": token, "alice_id": alice_id}
    finally:
        process.terminate()
        process.wait(15)


def trigger_over_api(served, order_id: str) -> None:
    request = urllib.request.Request(
        f"{served['base']}/api/v1/events",
        data=json.dumps(
            {
                "type": "order.shipped",
                "payload": {"order_id": order_id, "customer_id": served["alice_id"]},
            }
        ).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {served['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state()


def unread(badge) -> int:
    """The count the header's badge shows (0 when hidden)."""
    if badge.is_hidden():
        return 0
    return int(re.search(r"(\d+)\s*$", badge.text_content()).group(1))


def new_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page


def test_the_first_hour_in_a_browser(browser, served, screenshot):
    base = served["base"]
    alice, inbox = new_page(browser)
    staff, outbox = new_page(browser)
    try:
        # Home page, as a visitor: what notify is, log in, the API docs.
        page = inbox
        page.goto(f"{base}/")
        assert "right message" in page.inner_text("main")
        assert page.get_by_role("link", name="API reference").count() == 1
        screenshot(page, "walkthrough-1-home-visitor")

        # Log in from there.
        page.get_by_role("link", name="Log in").click()
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", served["passwords"]["alice"])
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state()
        page.goto(f"{base}/")
        assert page.get_by_role("link", name="Notification settings").count() == 1
        screenshot(page, "walkthrough-2-home-alice")

        # Settings.
        page.get_by_role("link", name="Notification settings").click()
        page.locator(".pref-grid").wait_for()
        assert page.locator("#cell-orders-email").is_checked()
        screenshot(page, "walkthrough-3-settings")

        # Two tabs: the inbox, and the settings page with the header's badge.
        settings_tab = alice.new_page()
        settings_tab.set_default_timeout(20_000)
        settings_tab.goto(f"{base}/settings/notifications/")
        page.goto(f"{base}/inbox/")
        badge = settings_tab.locator("#unread-badge")
        before = unread(badge)  # the demo data may have left some
        time.sleep(1)  # both live streams connected

        # An event from another service, over the HTTP API.
        started = time.monotonic()
        trigger_over_api(served, "W-1001")
        page.get_by_text("W-1001").first.wait_for()
        settings_tab.wait_for_function(
            f"(document.querySelector('#unread-badge').textContent.match(/(\\d+)\\s*$/) || [0, 0])[1] > {before}"
        )
        took = time.monotonic() - started
        assert badge.is_visible() and unread(badge) == before + 1
        screenshot(page, "walkthrough-4-inbox-live")
        screenshot(settings_tab, "walkthrough-5-badge-on-settings", full_page=False)
        assert took < 15, took

        # The email, in the sandbox outbox (staff only).
        log_in(outbox, base, "admin", served["passwords"]["admin"])
        deadline = time.monotonic() + 20
        while True:
            outbox.goto(f"{base}/dev/outbox/")
            if "W-1001" in outbox.content() or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        email = outbox.locator("article", has_text="W-1001").filter(has_text="email").first
        email.wait_for()
        email.locator("summary", has_text="Headers").click()
        screenshot(outbox, "walkthrough-6-dev-outbox")
        text = email.locator("details pre").first.text_content()
        links = UNSUBSCRIBE.findall(unescape(text))
        assert links, text
        assert all(link.startswith(f"{base}/") for link in links), links

        # Its unsubscribe link, on this port, then resubscribe.
        page.goto(links[0])
        assert page.url.startswith(f"{base}/unsubscribe/")
        page.get_by_role("heading", name=re.compile("Unsubscribe from Orders")).wait_for()
        screenshot(page, "walkthrough-7-unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        page.get_by_role("heading", name="You are unsubscribed").wait_for()
        screenshot(page, "walkthrough-8-unsubscribed")
        page.goto(links[0])  # a used link says so, and offers resubscribe
        page.get_by_role("heading", name="You are unsubscribed").wait_for()
        page.get_by_role("button", name="Resubscribe").click()
        page.get_by_role("heading", name="You are subscribed again").wait_for()
        screenshot(page, "walkthrough-9-resubscribed")
        page.goto(f"{base}/settings/notifications/")
        assert page.locator("#cell-orders-email").is_checked()
    finally:
        alice.close()
        staff.close()
