"""The header's unread badge is live on every page, not only /inbox/."""

from __future__ import annotations

import pytest

from notify import trigger
from notify.runtime.worker import run_until_idle

pytestmark = pytest.mark.browser


def test_the_badge_counts_a_new_notification_on_the_settings_page(
    page, live_server, login, make_user, make_rule, category, screenshot
):
    alice = make_user("alice", first_name="Alice")
    make_rule(channels=["inapp"])
    login(page, "alice", "pw-alice")
    page.goto(f"{live_server.url}/settings/notifications/")
    badge = page.locator("#unread-badge")
    assert badge.is_hidden()

    trigger("order.shipped", {"order_id": "B-7"}, recipients=[alice])
    run_until_idle()
    # Django's test server is WSGI: the stream is long-polled (retry: 2 s).
    badge.wait_for(state="visible", timeout=10_000)
    assert badge.inner_text().strip().endswith("1")
    screenshot(page, "badge-live-settings", full_page=False)
