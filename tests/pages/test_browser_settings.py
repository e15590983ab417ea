"""The settings page in headless Chromium against the live server: sign in,
change the grid and the schedule, errors next to their fields, a phone verified
with the code the local Twilio peer received, the phone-width layout.

Each test saves a screenshot under ``artifacts/screenshots/settings-*.png``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from notify.models import ContactPoint, UserSettings
from notify.pages import prefs
from rules.models import Rule
from tests.pages.test_settings_page import grid_fixture, page_channels_fixture  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = "+447911123456"
SHOWN = "+44 7911 123456"  # how the page writes it


@pytest.fixture(autouse=True)
def orders_by_sms(grid):
    """Orders go out by SMS too, so the grid has an SMS cell for them
    (``notify.pages.grid`` draws only the channels a category's rules use)."""
    Rule.objects.create(
        name="orders",
        event_type="order.shipped",
        category=grid.orders,
        recipients=["explicit"],
        message="order_shipped",
        channels=["email", "inapp", "sms"],
    )


@pytest.fixture
def ann(make_user):
    return make_user("ann", first_name="Ann")


@pytest.fixture
def settings_url(live_server):
    return f"{live_server.url}/settings/notifications/"


def test_sign_in_change_the_grid_and_schedule_and_they_are_kept(
    page, login, settings_url, screenshot, ann, grid
):
    page.goto(settings_url)
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))
    screenshot(page, "settings-login")
    login(page, "ann", "pw-ann")
    expect(page).to_have_url(settings_url)
    expect(page.get_by_role("heading", name="Notification settings")).to_be_visible()

    # Critical is locked on and says why; opt-in starts off.
    expect(page.locator("#cell-security-email")).to_be_checked()
    expect(page.locator("#cell-security-email")).to_be_disabled()
    expect(page.locator("#row-security")).to_contain_text("We must tell you about activity")
    expect(page.locator("#cell-product-news-email")).not_to_be_checked()

    page.get_by_label("How often: Orders").select_option("daily")
    page.get_by_label("In-app: Orders").uncheck()
    page.get_by_label("SMS: Orders").check()
    page.get_by_label("Email: Product news").check()
    page.get_by_label("How often: Product news").select_option("weekly")
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_label("From").fill("22:00")
    page.get_by_label("To", exact=True).fill("07:30")
    page.get_by_label("Send digests at").select_option("18")
    page.get_by_label("Weekly digest on").select_option("Friday")
    page.get_by_role("button", name="Save settings").click()

    expect(page.locator(".messages")).to_contain_text("Your notification settings are saved.")
    page.reload()
    expect(page.get_by_label("How often: Orders")).to_have_value("daily")
    expect(page.get_by_label("How often: Product news")).to_have_value("weekly")
    expect(page.get_by_label("In-app: Orders")).not_to_be_checked()
    expect(page.get_by_label("SMS: Orders")).to_be_checked()
    expect(page.get_by_label("Email: Product news")).to_be_checked()
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Paris")
    expect(page.get_by_label("From")).to_have_value("22:00")
    expect(page.get_by_label("To", exact=True)).to_have_value("07:30")
    expect(page.get_by_label("Send digests at")).to_have_value("18")
    expect(page.get_by_label("Weekly digest on")).to_have_value("4")
    current = prefs.read(ann)
    assert current.modes[grid.orders.pk] == "daily"
    assert current.cells[(grid.news.pk, "email")] is True
    screenshot(page, "settings-saved")


def test_a_bad_phone_number_is_shown_next_to_the_field_and_nothing_is_saved(
    page, login, settings_url, screenshot, ann, grid
):
    login(page, "ann", "pw-ann")
    page.get_by_label("Type").select_option("phone")
    expect(page.locator('.kind-hints [data-kind="phone"]')).to_be_visible()
    expect(page.locator('.kind-hints [data-kind="email"]')).to_be_hidden()
    page.get_by_label("Address", exact=True).fill("0791 12")
    page.get_by_role("button", name="Add and verify").click()

    address = page.locator("#id_address")
    error = page.locator("#id_address-error")
    expect(error).to_contain_text("is not a valid phone number")
    expect(address).to_have_attribute("aria-invalid", "true")
    assert "id_address-error" in address.get_attribute("aria-describedby")
    expect(address).to_have_value("0791 12")  # what was typed is kept
    field, below = address.bounding_box(), error.bounding_box()
    assert 0 <= below["y"] - (field["y"] + field["height"]) < 30  # right under the input
    # The summary takes the focus (screen readers announce it) and links to the field.
    assert page.evaluate("document.activeElement.id") == "error-summary"
    summary_link = page.locator("#error-summary a[href='#id_address']")
    expect(summary_link).to_contain_text("is not a valid phone number")
    summary_link.click()
    assert page.evaluate("document.activeElement.id") == "id_address"
    assert not ContactPoint.objects.exists()
    screenshot(page, "settings-bad-phone")


def test_bad_settings_fields_are_named_and_nothing_is_saved(
    page, login, settings_url, screenshot, ann, grid
):
    login(page, "ann", "pw-ann")
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    page.get_by_label("From").fill("22:00")
    page.get_by_label("SMS: Orders").check()
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#error-summary")).to_contain_text("Nothing was saved: 2 problems")
    expect(page.locator("#id_timezone-error")).to_contain_text("not a known time zone")
    expect(page.locator("#id_quiet_end-error")).to_contain_text("Set when quiet hours end")
    expect(page.get_by_label("SMS: Orders")).to_be_checked()  # the submitted state is kept
    assert not UserSettings.objects.exists()
    assert prefs.read(ann).cells[(grid.orders.pk, "sms")] is False
    screenshot(page, "settings-errors")


def test_verify_a_phone_with_the_code_twilio_delivered(
    page, login, settings_url, screenshot, ann, grid, twilio_sms
):
    """The "sms" channel is the real TwilioSmsChannel, talking to the local
    Twilio peer; the code is read from what the peer received."""
    login(page, "ann", "pw-ann")
    page.get_by_label("Type").select_option("phone")
    page.get_by_label("Address", exact=True).fill("+44 7911 123456")
    page.get_by_role("button", name="Add and verify").click()
    expect(page.locator(".messages")).to_contain_text(f"We sent a 6-digit code to {SHOWN}")
    point = ContactPoint.objects.get(user=ann)
    card = page.locator(f"#contact-{point.pk}")
    expect(card).to_contain_text("Not verified")
    screenshot(page, "settings-phone-code-sent", full_page=False)

    [sms] = twilio_sms.messages_to(PHONE)
    code = re.fullmatch(r"Your notify code is (\d{6})", sms.body).group(1)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    card.get_by_label(f"Code we sent to {SHOWN}").fill(wrong)
    card.get_by_role("button", name="Verify").click()
    expect(page.locator(f"#code-{point.pk}-error")).to_contain_text("4 tries left")

    card = page.locator(f"#contact-{point.pk}")
    card.get_by_label(f"Code we sent to {SHOWN}").fill(code)
    card.get_by_role("button", name="Verify").click()
    expect(page.locator(".messages")).to_contain_text(f"{SHOWN} is verified.")
    expect(page.locator(f"#contact-{point.pk}")).to_contain_text("Verified")
    expect(page.locator(f"#contact-{point.pk}")).to_contain_text("Primary")
    point.refresh_from_db()
    assert point.verified and point.is_primary

    # And a test on SMS now reaches it, through the same peer.
    page.get_by_role("button", name="Test SMS").click()
    expect(page.locator("#test-result-sms")).to_contain_text(f"sent to {SHOWN}")
    assert len(twilio_sms.messages_to(PHONE)) == 2
    screenshot(page, "settings-phone-verified")


def test_send_me_a_test_shows_what_happened(page, login, settings_url, screenshot, ann, grid):
    """Also the README's picture: an account with a few choices made."""
    now = timezone.now()
    ContactPoint.objects.create(
        user=ann, kind="phone", address=PHONE, verified_at=now, is_primary=True
    )
    ContactPoint.objects.create(
        user=ann, kind="email", address="ann.work@example.com", verification_sent_at=now
    )
    london = now.astimezone(ZoneInfo("Europe/London"))
    changes, errors = prefs.validate(
        {
            "timezone": "Europe/London",
            # An hour of quiet that starts a few hours from now, so nothing here waits.
            "quiet_start": f"{(london + timedelta(hours=3)).hour:02d}:00",
            "quiet_end": f"{(london + timedelta(hours=4)).hour:02d}:00",
            "categories": {
                "orders": {"mode": "daily", "channels": {"sms": True}},
                "product-news": {"mode": "weekly", "channels": {"email": True}},
            },
        },
        ann,
    )
    assert errors == []
    prefs.save(ann, changes)

    login(page, "ann", "pw-ann")
    page.get_by_role("button", name="Test SMS").click()
    expect(page.locator(".messages")).to_contain_text("Test on SMS: sent to +44 7911 123456.")
    expect(page.locator("#test-result-sms")).to_contain_text("just now: sent to +44 7911 123456")
    page.get_by_role("button", name="Test Email").click()
    # ann.work@ is not verified yet, so the account address still serves.
    expect(page.locator("#test-result-email")).to_contain_text("sent to ann@example.com")
    page.get_by_role("button", name="Test Chat").click()
    expect(page.locator("#test-result-chat")).to_contain_text("skipped: no address")
    page.get_by_role("button", name="Test In-app").click()
    expect(page.locator("#test-result-inapp")).to_contain_text("sent to your inbox")
    expect(page.locator("#test-help")).to_contain_text("1 of 5 left this hour")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "settings-page")


def test_phone_width_stacks_the_grid(phone_page, login, settings_url, screenshot, ann, grid):
    login(phone_page, "ann", "pw-ann")
    expect(phone_page.get_by_role("heading", name="Notification settings")).to_be_visible()
    # No sideways scrolling; each cell shows its channel's name next to the box.
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= phone_page.viewport_size["width"]
    expect(phone_page.locator("#row-orders .cell-label").first).to_be_visible()
    phone_page.get_by_label("SMS: Orders").check()
    phone_page.get_by_role("button", name="Save settings").click()
    expect(phone_page.locator(".messages")).to_contain_text("saved")
    assert prefs.read(ann).cells[(grid.orders.pk, "sms")] is True
    screenshot(phone_page, "settings-phone-width")
    phone_page.evaluate("window.scrollTo(0, 0)")
    screenshot(phone_page, "settings-phone-width-top", full_page=False)


def test_time_zone_is_filled_in_from_the_browser(browser, login, settings_url, ann, grid):
    context = browser.new_context(timezone_id="America/Sao_Paulo")
    page = context.new_page()
    try:
        login(page, "ann", "pw-ann")
        expect(page.get_by_label("Time zone")).to_have_value("America/Sao_Paulo")
        expect(page.locator("#timezone-guess")).to_contain_text("Filled in from your browser")
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator(".messages")).to_contain_text("saved")
        assert UserSettings.objects.get(user=ann).timezone == "America/Sao_Paulo"
        # Once saved, the browser's zone no longer replaces the user's choice.
        page.get_by_label("Time zone").fill("Asia/Tokyo")
        with page.expect_navigation():  # the save's own page load, before reloading it
            page.get_by_role("button", name="Save settings").click()
        expect(page.locator(".messages")).to_contain_text("saved")
        page.reload()
        expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")
    finally:
        context.close()


def test_works_without_javascript(browser, live_server, settings_url, ann, grid):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill("ann")
        page.get_by_label("Password").fill("pw-ann")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_label("Time zone")).to_have_value("UTC")
        page.get_by_label("How often: Orders").select_option("off")
        page.get_by_role("button", name="Save settings").click()
        expect(page.locator(".messages")).to_contain_text("saved")
        assert prefs.read(ann).modes[grid.orders.pk] == "off"
    finally:
        context.close()
