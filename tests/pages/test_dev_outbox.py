"""``/dev/outbox/`` shows an email as it would arrive: its headers, and its HTML
part rendered in a sandboxed iframe (no script, no access to the page)."""

from __future__ import annotations

from datetime import UTC, datetime

import time_machine
from django.utils import timezone
from django.utils.html import escape

from channels import sandbox
from notify import trigger
from notify.fanout.pipeline import process_event
from notify.models import CategoryPreference, UserSettings
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.periods import next_due

HTML = (
    '<p>Hi <b>Ann</b></p><script>alert(1)</script><a href="http://x/unsubscribe/t/">Unsubscribe</a>'
)


def test_email_headers_and_html_in_a_sandboxed_iframe(admin_client, settings, tmp_path):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True, "SANDBOX_DIR": str(tmp_path)}
    sandbox.record(
        {
            "channel": "email",
            "provider": "sandbox",
            "to": ["ann@example.com"],
            "from": "notify@example.com",
            "subject": "Shipped",
            "text": "Hi Ann",
            "html": HTML,
            "headers": {"List-Unsubscribe": "<http://x/unsubscribe/t/>"},
        },
        directory=str(tmp_path),
    )
    page = admin_client.get("/dev/outbox/").content.decode()  # staff only
    assert f'<iframe class="html-part" sandbox="" srcdoc="{escape(HTML)}"' in page
    assert "<script>alert(1)</script>" not in page
    assert '<th scope="row">List-Unsubscribe</th><td>&lt;http://x/unsubscribe/t/&gt;</td>' in page
    assert '<th scope="row">From</th><td>notify@example.com</td>' in page


# -- held for a digest --------------------------------------------------------------

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)  # Friday noon UTC = 13:00 in Paris


def test_next_due_is_the_first_digest_hour_after_the_item_began_waiting():
    daily = next_due(T0, "daily", "Europe/Paris", 8)
    assert (daily.period, daily.due_at) == ("2026-11-21", datetime(2026, 11, 21, 7, tzinfo=UTC))
    weekly = next_due(T0, "weekly", "Europe/Paris", 8, weekday=0)
    assert weekly.due_at == datetime(2026, 11, 23, 7, tzinfo=UTC)
    # Before today's hour: today. Across the spring DST change: 08:00 local is 06:00 UTC.
    early = next_due(datetime(2026, 3, 28, 5, tzinfo=UTC), "daily", "Europe/Paris", 8)
    assert early.due_at == datetime(2026, 3, 28, 7, tzinfo=UTC)
    dst = next_due(datetime(2026, 3, 28, 9, tzinfo=UTC), "daily", "Europe/Paris", 8)
    assert dst.due_at == datetime(2026, 3, 29, 6, tzinfo=UTC)


def test_outbox_lists_what_waits_for_a_digest_and_when_it_goes(
    admin_client, settings, tmp_path, make_user, make_rule, category
):
    """What the page says is what the scheduler does: nothing is built a minute
    before the time shown, and the listed items go out at it."""
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True, "SANDBOX_DIR": str(tmp_path)}
    make_rule(channels=["email"])
    dora = make_user("dora")
    UserSettings.objects.create(user=dora, timezone="Europe/Paris", digest_hour=8)
    CategoryPreference.objects.create(user=dora, category=category, mode="daily")
    with time_machine.travel(T0, tick=False):
        for order in ("A1", "A2"):
            process_event(trigger("order.shipped", {"order_id": order}, recipients=[dora]).pk)
        page = admin_client.get("/dev/outbox/").content.decode()
    held = page.split('id="held-for-digest"', 1)[1].split("</section>", 1)[0]
    assert "dora" in held and "email" in held
    assert "daily digest for Saturday 21 November 2026" in held
    assert "goes out Sat 21 Nov 2026 08:00 Europe/Paris" in held
    assert held.count("Orders: order.shipped") == 2
    with time_machine.travel(datetime(2026, 11, 21, 6, 59, tzinfo=UTC), tick=False):
        assert build_due_digests(timezone.now()) == (0, 0)
    with time_machine.travel(datetime(2026, 11, 21, 7, tzinfo=UTC), tick=False):
        assert build_due_digests(timezone.now()) == (1, 2)
        page = admin_client.get("/dev/outbox/").content.decode()
    assert "Nothing is waiting for a digest." in page


def test_outbox_says_when_nothing_waits(admin_client, settings, tmp_path):
    settings.NOTIFY = {**settings.NOTIFY, "SANDBOX": True, "SANDBOX_DIR": str(tmp_path)}
    assert "Nothing is waiting for a digest." in admin_client.get("/dev/outbox/").content.decode()
