"""The rules admin in headless Chromium: a rule's preview (nothing sent) and a
signal binding added and edited, with screenshots in artifacts/screenshots/."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from notify import trigger
from notify.models import Event, Notification
from rules.bindings import binding_index
from rules.models import AuditEntry, SignalBinding

pytestmark = pytest.mark.browser

User = get_user_model()
PASSWORD = "browser-admin-pw"


@pytest.fixture
def shot(screenshot):
    """The whole page, taken through a viewport as tall as the page: a
    full-page capture would draw admin's sticky sidebar where the page was
    scrolled to, and leave the sandboxed HTML previews (iframes) blank."""

    def take(page, name: str) -> None:
        size = page.viewport_size
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": size["width"], "height": min(height, 6000)})
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, name, full_page=False)
        page.set_viewport_size(size)

    return take


@pytest.fixture
def admin_page(page, live_server, db):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "/admin/login/" not in page.url
    return page


def test_rule_preview_in_the_browser(
    admin_page, live_server, make_user, make_rule, smtp_mailer, shot
):
    page = admin_page
    alice = make_user("alice", first_name="Alice")
    bob = make_user("bob", first_name="Bob")
    rule = make_rule(name="Order shipped", recipients=["explicit"], channels=["email", "inapp"])
    make_rule(name="Big orders only", condition="payload.total > 1000", recipients=["explicit"])
    event = trigger(
        "order.shipped",
        {"order_id": "A-1001", "carrier": "DHL", "total": 80},
        recipients=[alice, bob],
    )

    page.goto(f"{live_server.url}/admin/rules/rule/{rule.pk}/change/")
    for section in (
        "Later: delays, reminders, active hours",
        "How often: throttling and deduplication",
    ):
        page.get_by_text(section).click()
    page.locator("#id_throttle_limit").wait_for()
    shot(page, "rules-rule-change")
    page.get_by_role("link", name="Preview / dry run").click()
    page.get_by_role("heading", name="Event", exact=True).wait_for()
    shot(page, "rules-preview-form")

    page.get_by_role("link", name="Preview with this event").first.click()
    page.locator("#preview-results").wait_for()
    rules_table = page.locator("#preview-rules")
    assert "Big orders only" in rules_table.inner_text()
    assert "condition is false" in rules_table.inner_text()
    result = page.locator(f"#rule-{rule.pk}")
    text = result.inner_text()
    assert "2 recipients" in text
    assert "alice@example.com" in text and "bob@example.com" in text
    assert "Your order A-1001 has shipped" in text
    assert result.locator("iframe").count() == 2  # the HTML part, sandboxed
    html = page.frame_locator(f"#rule-{rule.pk} iframe").first.locator("body")
    assert "is on its way with DHL" in html.inner_text()
    shot(page, "rules-preview-result")

    # Nothing was sent, written or processed.
    assert smtp_mailer.messages == []
    assert not Notification.objects.exists()
    assert Event.objects.get(pk=event.pk).status == Event.State.RECEIVED

    # A pasted payload, with an error first.
    page.locator("#id_source_1").check()
    page.fill("#id_payload", '{"order_id": "B-2",')
    page.get_by_role("button", name="Preview").click()
    page.locator("#id_payload_error").get_by_text("Not valid JSON").wait_for()
    page.fill("#id_payload", '{"order_id": "B-2", "total": 5000}')
    page.fill("#id_recipients", str(alice.pk))
    page.get_by_role("button", name="Preview").click()
    page.locator("#preview-results").wait_for()
    assert page.locator(".verdict.no").count() == 0  # both rules match now
    shot(page, "rules-preview-pasted")
    assert smtp_mailer.messages == []


def test_binding_added_and_edited_in_the_browser(admin_page, live_server, make_user, shot):
    page = admin_page
    binding_index.clear()
    user_type = ContentType.objects.get_for_model(User)
    page.goto(f"{live_server.url}/admin/rules/signalbinding/add/")
    page.select_option("#id_content_type", str(user_type.pk))
    page.select_option("#id_signal", "updated")
    page.fill("#id_event_type", "user.updated")
    # The page redraws the model's fields; the password cannot be ticked.
    password = page.locator("#id_payload_fields input[value=password]")
    password.wait_for()
    assert password.is_disabled()
    page.locator("#id_payload_fields input[value=username]").check()
    page.locator("#id_payload_fields input[value=email]").check()
    page.locator("#id_changed_fields input[value=email]").check()
    shot(page, "rules-binding-add")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator(".messagelist .success").wait_for()
    shot(page, "rules-binding-list")
    binding = SignalBinding.objects.get(event_type="user.updated")
    assert binding.payload_fields == ["username", "email"]
    assert binding.changed_fields == ["email"]

    # Edit: add the first name to the payload.
    page.get_by_role("link", name="auth.user").first.click()
    page.locator("#id_payload_fields input[value=first_name]").check()
    shot(page, "rules-binding-edit")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator(".messagelist .success").wait_for()
    binding.refresh_from_db()
    assert binding.payload_fields == ["username", "first_name", "email"]
    assert AuditEntry.objects.filter(kind="binding", actor_name="root").count() == 2

    # The edit is live in this process at once: an update of the email is an event.
    alice = make_user("alice", first_name="Alice")
    alice.email = "alice@new.example.com"
    alice.save()
    [event] = Event.objects.filter(type="user.updated")
    assert event.payload["object"] == {
        "username": "alice",
        "first_name": "Alice",
        "email": "alice@new.example.com",
    }
    assert event.payload["changes"]["email"]["old"] == "alice@example.com"

    # The audit log shows the edit.
    entry = AuditEntry.objects.filter(kind="binding", action="changed").get()
    page.goto(f"{live_server.url}/admin/rules/auditentry/{entry.pk}/change/")
    page.get_by_role("button", name="Restore this version").wait_for()
    shot(page, "rules-audit-entry")
