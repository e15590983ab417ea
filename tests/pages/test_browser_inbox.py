"""The inbox and unsubscribe pages in headless Chromium.

* The unsubscribe link of an email delivered to the SMTP peer, opened and
  confirmed in the browser, turns the preference off.
* The inbox page: unread marking, a collapsed group with its members on
  demand, mark read over fetch updating the badge — at desktop and phone width.
* Live updates under the real embedded server: ``notify run`` (uvicorn, worker
  pool, scheduler) in a subprocess; a notification triggered over the HTTP API
  appears in the open inbox within 2 s and the badge counts it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from notify import trigger
from notify.models import ChannelPreference, Event, Notification
from notify.runtime.worker import run_until_idle
from tests.runtime.test_embedded_run import free_port, get, manage

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


def badge_count(page) -> int:
    badge = page.locator("#unread-badge")
    if badge.is_hidden():
        return 0
    return int(re.sub(r"\D", "", badge.inner_text()))


# -- unsubscribe ------------------------------------------------------------------------


def test_unsubscribe_link_from_a_delivered_email(
    page, phone_page, live_server, smtp_mailer, settings, make_user, make_rule, category, screenshot
):
    settings.NOTIFY = {**settings.NOTIFY, "SITE_URL": live_server.url}
    alice = make_user("alice", first_name="Alice")
    make_rule(channels=["email"])
    trigger("order.shipped", {"order_id": "B-12", "carrier": "DHL"}, recipients=[alice])
    run_until_idle()
    [email] = smtp_mailer.messages_to(alice.email)
    link = re.fullmatch(r"<(\S+)>", email.headers["List-Unsubscribe"]).group(1)
    assert link.startswith(f"{live_server.url}/unsubscribe/")
    assert link in email.text  # the footer carries the same link

    # A phone opens it first: the confirmation fits the screen and changes nothing.
    phone_page.goto(link)
    phone_page.get_by_role("heading", name="Unsubscribe from Orders?").wait_for()
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone_page, "unsubscribe-confirm-phone")
    assert not ChannelPreference.objects.exists()

    page.goto(link)
    screenshot(page, "unsubscribe-confirm")
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    screenshot(page, "unsubscribe-done")

    pref = ChannelPreference.objects.get(user=alice, category=category, channel="email")
    assert pref.enabled is False
    assert page.get_by_role("link", name="notification settings").get_attribute("href") == (
        "/settings/notifications/"
    )

    page.goto(link[:-3] + "xx/")  # a damaged link
    page.get_by_role("heading", name="This unsubscribe link is not valid").wait_for()
    screenshot(page, "unsubscribe-invalid")


# -- the inbox page ------------------------------------------------------------------------


@pytest.fixture
def filled_inbox(make_user, category):
    """Alice's inbox: a collapsed group of 12 comments, a read item, unread items."""
    alice = make_user("alice", first_name="Alice")
    start = timezone.now() - timedelta(hours=3)

    def item(n, title, body="", *, read=False, actor=None, group=""):
        return Notification.objects.create(
            event=Event.objects.create(type="comment.posted", payload={"n": n}, actor=actor),
            user=alice,
            category=category,
            title=title,
            body=body,
            url=f"/orders/{n}",
            inbox_at=start + timedelta(minutes=n),
            read_at=start + timedelta(minutes=n + 1) if read else None,
            group_key=group,
        )

    item(1, "Order A-1001 shipped", "It is on its way with DHL.", read=True)
    item(2, "Order A-1002 shipped", "It is on its way with UPS.")
    for n in range(12):
        actor = make_user(f"writer{n}", first_name=["Bea", "Cas", "Dev", "Eli"][n % 4] + f" {n}")
        item(
            10 + n,
            f"{actor.first_name} commented on Launch plan",
            "Looks good!",
            actor=actor,
            group="2:launch",
        )
    item(
        30,
        "A very long notification title that has to wrap nicely on a narrow phone screen without overflowing",
        "Body text " * 20,
    )
    return alice


def test_inbox_page_marks_collapses_and_updates_the_badge(
    page, phone_page, filled_inbox, login, live_server, screenshot
):
    login(page, "alice", "pw-alice")
    page.goto(f"{live_server.url}/inbox/")
    page.get_by_role("heading", name="Inbox").wait_for()
    assert badge_count(page) == 14  # 1 + 12 + 1 unread items

    items = page.locator("#inbox-list > li")
    assert items.count() == 4  # the twelve comments are one entry
    group = page.locator("li.is-collapsed")
    assert (
        group.locator(".inbox-title")
        .inner_text()
        .endswith("Eli 11 and 11 others commented on Launch plan")
    )
    assert "Unread:" in group.locator(".inbox-title").text_content()
    group.get_by_text("Show all 12").click()
    assert group.locator("details li").count() == 12
    screenshot(page, "inbox-desktop")

    # Mark the group read over fetch: no reload, the badge drops by twelve.
    page.evaluate("window.__sameDocument = true")
    group.get_by_role("button", name=re.compile("^Mark read")).click()
    page.wait_for_function("document.querySelector('#unread-badge').textContent.includes('2')")
    assert page.evaluate("window.__sameDocument") is True
    assert badge_count(page) == 2
    assert Notification.objects.filter(user=filled_inbox, read_at__isnull=True).count() == 2
    assert page.locator("li.is-collapsed.is-read").count() == 1
    screenshot(page, "inbox-after-mark-read")

    # Without JavaScript the same buttons are plain form posts.
    login(phone_page, "alice", "pw-alice")
    phone_page.goto(f"{live_server.url}/inbox/")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone_page, "inbox-phone")
    page.get_by_role("button", name="Mark all read").click()
    page.wait_for_function("document.querySelector('#unread-badge').hidden")
    assert not Notification.objects.filter(user=filled_inbox, read_at__isnull=True).exists()


def test_inbox_forms_work_without_javascript(browser, filled_inbox, live_server, screenshot):
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/login/?next=/inbox/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "pw-alice")
        page.click("button[type=submit]")
        page.get_by_role("heading", name="Inbox").wait_for()
        first = page.locator("#inbox-list > li").first
        first.get_by_role("button", name=re.compile("^Mark read")).click()
        page.get_by_role("heading", name="Inbox").wait_for()
        assert badge_count(page) == 13
        assert page.url.endswith("/inbox/")
        screenshot(page, "inbox-no-js")
    finally:
        context.close()


# -- live, under the real embedded server ------------------------------------------------------

SETUP = """
from django.contrib.auth import get_user_model
from notify.models import Category
from rules.models import Rule
User = get_user_model()
dana = User.objects.create_user("dana", "dana@example.com", "dana-pw-1234", first_name="Dana")
orders = Category.objects.create(key="orders", name="Orders")
Rule.objects.create(name="shipped", event_type="order.shipped", category=orders,
                    recipients=["payload:customer_id"], channels=["email", "inapp"],
                    message="order_shipped")
print(dana.pk)
"""


@pytest.fixture
def notify_run(tmp_path):
    """``notify run`` on a free port with its own var dir; yields (base, token, user id)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "NOTIFY_EMAIL_BACKEND"}}
    env.update(
        NOTIFY_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="notify.project.settings"
    )
    port = free_port()
    env["NOTIFY_SITE_URL"] = f"http://127.0.0.1:{port}"
    manage(env, "migrate", "--no-input")
    user_id = int(manage(env, "shell", "-c", SETUP).stdout.strip().splitlines()[-1])
    token = manage(env, "notify", "apikey", "create", "browser").stdout.strip().splitlines()[-1]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "notify", "run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("notify run did not answer /healthz within 60 s")
        yield base, token, user_id
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("notify run did not stop within 15 s of SIGTERM")
        log.close()


def post_event(base: str, token: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{base}/api/v1/events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
        assert response.status == 202


@pytest.mark.slow
def test_new_notification_appears_live_under_notify_run(browser, notify_run, screenshot):
    base, token, user_id = notify_run
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(f"{base}/accounts/login/?next=/inbox/")
        page.fill("input[name=username]", "dana")
        page.fill("input[name=password]", "dana-pw-1234")
        page.click("button[type=submit]")
        page.get_by_role("heading", name="Inbox").wait_for()
        page.wait_for_selector("#inbox-list[data-live=on]")  # the EventSource is open
        assert badge_count(page) == 0
        page.evaluate("window.__sameDocument = true")

        for number, order in enumerate(["Z-77", "Z-78"], 1):
            post_event(
                base,
                token,
                {"type": "order.shipped", "payload": {"order_id": order, "customer_id": user_id}},
            )
            started = time.monotonic()
            page.locator("#inbox-list .inbox-title", has_text=f"Order {order} shipped").wait_for(
                timeout=2_000
            )
            page.wait_for_function(
                f"document.querySelector('#unread-badge').textContent.includes('{number}')",
                timeout=max(100, int((2 - (time.monotonic() - started)) * 1000)),
            )
            assert time.monotonic() - started < 2
            assert badge_count(page) == number
        assert page.evaluate("window.__sameDocument") is True  # no reload happened
        titles = page.locator("#inbox-list .inbox-title").all_inner_texts()
        assert [t.replace("Unread:", "").strip() for t in titles] == [
            "Order Z-78 shipped",
            "Order Z-77 shipped",
        ]
        screenshot(page, "inbox-live-notify-run")
        # The pushed entries are real page entries: their forms (and CSRF tokens) work.
        page.get_by_role("button", name="Mark read: Order Z-78 shipped").click()
        page.wait_for_function("document.querySelector('#unread-badge').textContent.includes('1')")
        assert badge_count(page) == 1
    finally:
        context.close()
