"""An ops user builds the escalation workflow in admin (stacked step inlines,
↑/↓ to reorder), previews its timeline for a user with a simulated read at
+12 min, and sees the email skipped and the SMS not sent. Screenshots in
artifacts/screenshots/workflow-steps.png and workflow-timeline.png."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse

from notify.models import Category
from rules.models import Rule, WorkflowStep
from rules.ops import ensure_ops_group

pytestmark = pytest.mark.browser

PASSWORD = "ops-workflow-pw"


@pytest.fixture
def ops_page(page, live_server, make_user, twilio_sms):
    group, missing = ensure_ops_group()
    assert not missing
    ops = make_user("opsperson", is_staff=True)
    ops.set_password(PASSWORD)
    ops.save()
    ops.groups.add(group)
    # A long form and three page loads: patient on a loaded CI machine.
    page.set_default_timeout(60_000)
    page.set_default_navigation_timeout(60_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "opsperson")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return page


def fill_step(page, number: int, kind: str, **fields) -> None:
    prefix = f"#id_steps-{number}-"
    page.select_option(f"{prefix}kind", kind)
    for channel in fields.pop("channels", ()):
        page.check(f"input[name='steps-{number}-channels'][value='{channel}']")
    for name, value in fields.items():
        page.fill(f"{prefix}{name}", value)


def test_ops_builds_the_escalation_workflow_and_previews_its_timeline(
    ops_page, live_server, screenshot, make_user
):
    page = ops_page
    critical = Category.objects.create(key="incidents", name="Incidents", critical=True)
    rule = Rule.objects.create(
        name="incident escalation",
        event_type="order.shipped",
        category=critical,
        recipients=["explicit"],
        message="order_shipped",
    )
    alice = make_user("alice")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}{reverse('admin:rules_rule_change', args=[rule.pk])}")
    add = page.get_by_text("Add another Workflow step")
    for _ in range(5):
        add.click()
    # Built out of order on purpose: the delay first, then moved below the in-app step.
    fill_step(page, 0, "delay", delay="00:30:00")
    fill_step(page, 1, "channel", channels=["inapp"])
    fill_step(page, 2, "channel", channels=["email"], condition="not read")
    fill_step(page, 3, "delay", delay="01:30:00")
    fill_step(page, 4, "channel", channels=["sms"], condition="not read and category.critical")
    page.locator("#steps-1 .step-up").click()
    screenshot(page, "workflow-steps")
    page.click("input[name=_continue]")
    page.wait_for_load_state()
    assert page.locator(".errornote").count() == 0, page.locator(".errorlist").all_inner_texts()
    steps = list(WorkflowStep.objects.filter(rule=rule).order_by("position"))
    assert [(s.kind, s.channels, s.delay, s.condition) for s in steps] == [
        ("channel", ["inapp"], None, ""),
        ("delay", [], timedelta(minutes=30), ""),
        ("channel", ["email"], None, "not read"),
        ("delay", [], timedelta(minutes=90), ""),
        ("channel", ["sms"], None, "not read and category.critical"),
    ]

    page.click("a.rules-preview-link")
    page.wait_for_load_state()
    page.check("input[name=source][value=payload]")
    page.fill("#id_event_type", "order.shipped")
    page.fill("#id_payload", json.dumps({"order_id": "INC-7"}))
    page.fill("#id_recipients", str(alice.pk))
    page.fill("#id_timeline_user", str(alice.pk))
    page.select_option("#id_engagement", "read")
    page.fill("#id_engagement_minutes", "12")
    page.click("input[name=_preview]")
    page.wait_for_load_state()
    timeline = page.locator("table.timeline-table")
    timeline.wait_for()
    timeline.scroll_into_view_if_needed()
    screenshot(page, "workflow-timeline", full_page=False)
    rows = page.locator("tr.timeline-row").all_inner_texts()
    text = "\n".join(rows)
    assert "email skipped because the in-app item was read at +12 min" in text
    assert "sms skipped because the in-app item was read at +12 min" in text
    assert rows[0].startswith("+0 min\t1\tchannel\tsent")
    assert "inapp: send" in rows[0]
    assert page.get_by_text("simulated: read at +12 min").count() == 1
