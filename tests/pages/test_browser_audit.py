"""Restoring a rule from its audit entry's page in headless Chromium, as an
ops user (staff in the "ops" group): the button submits its own form, not
the admin change form it is drawn in. Screenshot in artifacts/screenshots/."""

from __future__ import annotations

import pytest

from rules.models import AuditEntry, Rule
from rules.ops import ensure_ops_group

pytestmark = pytest.mark.browser

PASSWORD = "browser-ops-pw"


@pytest.fixture
def ops_page(page, live_server, make_user):
    group, missing = ensure_ops_group()
    assert not missing
    user = make_user("opsperson", is_staff=True)
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(group)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "opsperson")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return page


def test_restore_this_version_from_the_entry_page(ops_page, live_server, make_rule, screenshot):
    page = ops_page
    rule = make_rule(name="Order shipped", condition="payload.total > 10", priority=1)
    rule.condition, rule.priority, rule.is_active = "payload.total > 999", 7, False
    rule.save()
    created = AuditEntry.objects.get(kind="rule", object_id=str(rule.pk), action="created")

    page.goto(f"{live_server.url}/admin/rules/auditentry/{created.pk}/change/")
    page.get_by_role("button", name="Restore this version").click()
    page.locator(".messagelist .success").wait_for()
    message = page.locator(".messagelist .success").inner_text()
    assert f"Rule Order shipped restored to the version of audit entry #{created.pk}" in message
    screenshot(page, "rules-audit-restored")

    # In the database: the version of the entry, recorded as a restore by the ops user.
    rule.refresh_from_db()
    assert (rule.condition, rule.priority, rule.is_active) == ("payload.total > 10", 1, True)
    latest = AuditEntry.objects.filter(kind="rule", object_id=str(rule.pk)).latest("pk")
    assert (latest.source, latest.actor_name) == ("restore", "opsperson")
    assert latest.note == f"restored from audit entry #{created.pk}"

    # On the page: the message links to the rule, whose form shows the restored fields.
    page.locator(".messagelist .success a", has_text="Order shipped").click()
    page.locator("#id_condition").wait_for()
    assert f"/admin/rules/rule/{rule.pk}/change/" in page.url
    assert page.locator("#id_condition").input_value() == "payload.total > 10"
    assert page.locator("#id_priority").input_value() == "1"
    assert page.locator("#id_is_active").is_checked()
    screenshot(page, "rules-audit-restored-rule")
    assert Rule.objects.count() == 1
