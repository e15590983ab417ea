"""The notification settings page through Django's test client: sign-in, the
category x channel grid, the schedule fields, errors, CSRF and test sends.

Forms are submitted the way a browser would: ``form_fields`` reads the
rendered form (enabled inputs, ticked checkboxes, selected options), then a
test changes what a user would change.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.cache import cache
from django.test import Client

from notify.models import (
    Category,
    CategoryPreference,
    ChannelPreference,
    ContactPoint,
    Delivery,
    Event,
    Notification,
    UserSettings,
)
from notify.pages import prefs
from notify.runtime.worker import run_until_idle

PAGE = "/settings/notifications/"
TEST_SEND = "/settings/notifications/test/"

CHANNELS = {
    "email": {"BACKEND": "channels.email.EmailChannel", "OPTIONS": {"MAILER": "default"}},
    "sms": {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "phone", "FORMAT": "sms"},
    },
    "chat": {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "slack", "FORMAT": "chat"},
    },
    "webhook": {
        "BACKEND": "channels.sandbox.SandboxChannel",
        "OPTIONS": {"ADDRESS_KIND": "webhook", "FORMAT": "chat"},
    },
    "inapp": {"BACKEND": "channels.inapp.InAppChannel", "OPTIONS": {}},
}


# -- fixtures and helpers (imported by the other settings test modules) ----------
# Fixtures are defined as ``<name>_fixture`` with ``name=``, so a module that
# imports them does not shadow the import with the test's parameter.


@pytest.fixture(name="page_channels")
def page_channels_fixture(settings):
    """Email, SMS (sandbox), chat (sandbox, Slack ids), webhook (sandbox), in-app;
    rate limits start empty."""
    settings.NOTIFY = {**settings.NOTIFY, "CHANNELS": CHANNELS, "SANDBOX": True}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(name="grid")
def grid_fixture(db, page_channels):
    orders = Category.objects.create(
        key="orders",
        name="Orders",
        description="Your orders: shipped, delivered, refunded.",
        default_channels=["email", "inapp"],
    )
    security = Category.objects.create(
        key="security",
        name="Security",
        description="Sign-ins and changes to your account.",
        critical=True,
        critical_reason="We must tell you about activity on your account.",
    )
    news = Category.objects.create(
        key="product-news",
        name="Product news",
        description="New features, now and then.",
        opt_in=True,
    )
    return SimpleNamespace(orders=orders, security=security, news=news)


@pytest.fixture(name="ann")
def ann_fixture(make_user):
    return make_user("ann")


@pytest.fixture(name="ann_client")
def ann_client_fixture(client, ann):
    client.force_login(ann)
    return client


class FormReader(HTMLParser):
    """What a browser submits for one form: enabled named controls, ticked
    checkboxes, each select's selected (else first) option."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, str] = {}
        self.select: str | None = None
        self.select_first: str | None = None
        self.select_disabled = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside:
            return
        if tag == "input" and a.get("name") and "disabled" not in a:
            kind = a.get("type", "text")
            if kind == "checkbox":
                if "checked" in a:
                    self.fields[a["name"]] = a.get("value", "on")
            elif kind != "submit":
                self.fields[a["name"]] = a.get("value", "")
        elif tag == "select":
            self.select = a.get("name")
            self.select_first = None
            self.select_disabled = "disabled" in a
        elif tag == "option" and self.select:
            value = a.get("value", "")
            if self.select_first is None:
                self.select_first = value
                if not self.select_disabled:
                    self.fields.setdefault(self.select, value)
            if "selected" in a and not self.select_disabled:
                self.fields[self.select] = value

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None
        elif tag == "form":
            self.inside = False


def form_fields(client, form_id: str = "settings-form", url: str = PAGE) -> dict[str, str]:
    response = client.get(url)
    assert response.status_code == 200
    reader = FormReader(form_id)
    reader.feed(response.content.decode())
    assert reader.fields, f"no form #{form_id}"
    return reader.fields


def field_error(html: str, input_id: str) -> str:
    """The error text shown next to an input (``<p id="<id>-error">``)."""
    match = re.search(rf'id="{re.escape(input_id)}-error"[^>]*>(.*?)</p>', html, re.S)
    assert match, f"no error next to #{input_id}"
    return unescape(match.group(1).strip())


def stored(user) -> tuple:
    """Everything the settings form can write for a user."""
    row = UserSettings.objects.filter(user=user).values().first()
    return (
        row,
        sorted(CategoryPreference.objects.filter(user=user).values_list("category_id", "mode")),
        sorted(
            ChannelPreference.objects.filter(user=user).values_list(
                "category_id", "channel", "enabled"
            )
        ),
    )


# -- sign-in ------------------------------------------------------------------------


def test_settings_need_a_signed_in_user(client, db):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={PAGE}"


def test_login_page_signs_in_and_lands_on_the_settings(client, ann, grid):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'autocomplete="current-password"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    response = client.post("/accounts/login/", {"username": "ann", "password": "pw-ann"})
    assert response.status_code == 302
    assert response["Location"] == PAGE
    assert client.get(PAGE).status_code == 200


def test_wrong_password_shows_an_error(client, ann):
    response = client.post("/accounts/login/", {"username": "ann", "password": "nope"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="error-summary"' in html and "correct username and password" in html


def test_logout_is_a_post(ann_client):
    assert ann_client.get("/accounts/logout/").status_code == 405
    response = ann_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert ann_client.get(PAGE).status_code == 302


# -- the grid -----------------------------------------------------------------------


def test_grid_shows_categories_channels_and_defaults(ann_client, grid):
    html = ann_client.get(PAGE).content.decode()
    for label in ("Email", "SMS", "Chat", "Webhook", "In-app"):
        assert f'<th scope="col" class="cell">{label}' in html
    assert "Your orders: shipped, delivered, refunded." in html
    fields = form_fields(ann_client)
    # Orders: on by default for its default channels only.
    assert fields["mode-orders"] == "immediate"
    assert "cell-orders-email" in fields and "cell-orders-inapp" in fields
    assert "cell-orders-sms" not in fields
    # Opt-in: off until turned on.
    assert not any(name.startswith("cell-product-news-") for name in fields)
    # Critical: locked on, with the reason, and nothing a browser would submit.
    assert not any(name.endswith("-security") or "-security-" in name for name in fields)
    assert re.search(
        r'id="cell-security-email"[^>]*checked[^>]*\s+disabled', html.replace("\n", " ")
    )
    assert "We must tell you about activity on your account." in html
    assert "Always on" in html


def test_hidden_test_category_is_not_on_the_grid(ann_client, grid):
    Category.objects.create(key=prefs.TEST_CATEGORY_KEY, name="Test notifications")
    assert "Test notifications" not in ann_client.get(PAGE).content.decode()


def test_grid_and_modes_save_and_reload(ann_client, ann, grid):
    fields = form_fields(ann_client)
    fields["mode-orders"] = "daily"
    fields.pop("cell-orders-inapp")  # off
    fields["cell-orders-sms"] = "on"
    fields["cell-product-news-email"] = "on"  # opt in
    fields["mode-product-news"] = "weekly"
    response = ann_client.post(PAGE, fields)
    assert response.status_code == 302
    assert response["Location"] == PAGE
    page = ann_client.get(PAGE)
    assert "Your notification settings are saved." in page.content.decode()
    again = form_fields(ann_client)
    assert again["mode-orders"] == "daily"
    assert again["mode-product-news"] == "weekly"
    assert "cell-orders-inapp" not in again
    assert {"cell-orders-sms", "cell-orders-email", "cell-product-news-email"} <= set(again)
    # Only what differs from a category's defaults is stored.
    assert sorted(
        ChannelPreference.objects.filter(user=ann).values_list(
            "category__key", "channel", "enabled"
        )
    ) == [
        ("orders", "inapp", False),
        ("orders", "sms", True),
        ("product-news", "email", True),
    ]
    current = prefs.read(ann)
    assert current.cells[(grid.news.pk, "email")] is True
    assert current.cells[(grid.news.pk, "sms")] is False


def test_choosing_the_defaults_again_removes_the_rows(ann_client, ann, grid):
    fields = form_fields(ann_client)
    ann_client.post(PAGE, {**fields, "mode-orders": "off", "cell-orders-sms": "on"})
    assert CategoryPreference.objects.filter(user=ann).exists()
    ann_client.post(PAGE, fields)
    assert not CategoryPreference.objects.filter(user=ann).exists()
    assert not ChannelPreference.objects.filter(user=ann).exists()


def test_critical_stays_on_whatever_a_forged_post_leaves_out(ann_client, ann, grid):
    fields = form_fields(ann_client)
    assert ann_client.post(PAGE, fields).status_code == 302
    current = prefs.read(ann)
    assert all(current.cells[(grid.security.pk, alias)] for alias in CHANNELS)
    assert not ChannelPreference.objects.filter(category=grid.security).exists()


def test_critical_mode_cannot_be_forged_off(ann_client, ann, grid):
    before = stored(ann)
    fields = form_fields(ann_client)
    response = ann_client.post(
        PAGE, {**fields, "mode-security": "off", "cell-security-email": "", "digest_hour": "20"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Security is always sent immediately" in field_error(html, "mode-security")
    assert stored(ann) == before
    assert prefs.read(ann).modes[grid.security.pk] == "immediate"


def test_digest_mode_does_not_hold_critical(ann, grid):
    # The grid shows critical as immediate even with a stale row in the table.
    CategoryPreference.objects.create(user=ann, category=grid.security, mode="off")
    ChannelPreference.objects.create(
        user=ann, category=grid.security, channel="email", enabled=False
    )
    current = prefs.read(ann)
    assert current.modes[grid.security.pk] == "immediate"
    assert current.cells[(grid.security.pk, "email")] is True


# -- the schedule -------------------------------------------------------------------


def test_schedule_fields_save_and_reload(ann_client, ann, grid):
    fields = form_fields(ann_client)
    fields.update(
        timezone="Europe/Paris",
        quiet_start="22:00",
        quiet_end="07:30",
        digest_hour="18",
        digest_weekday="4",
    )
    assert ann_client.post(PAGE, fields).status_code == 302
    row = UserSettings.objects.get(user=ann)
    assert (row.timezone, row.quiet_start, row.quiet_end) == (
        "Europe/Paris",
        time(22, 0),
        time(7, 30),
    )
    assert (row.digest_hour, row.digest_weekday) == (18, 4)
    again = form_fields(ann_client)
    assert again["timezone"] == "Europe/Paris"
    assert (again["quiet_start"], again["quiet_end"]) == ("22:00", "07:30")
    assert (again["digest_hour"], again["digest_weekday"]) == ("18", "4")
    # Clearing both ends turns quiet hours off.
    assert ann_client.post(PAGE, {**again, "quiet_start": "", "quiet_end": ""}).status_code == 302
    row.refresh_from_db()
    assert row.quiet_start is None and row.quiet_end is None


def test_pause_until_a_day_resumes_at_its_local_midnight(ann_client, ann, grid):
    with time_machine.travel(datetime(2026, 3, 10, 12, 0, tzinfo=UTC), tick=False):
        fields = form_fields(ann_client)
        fields.update(timezone="America/New_York", paused_until="2026-03-20")
        assert ann_client.post(PAGE, fields).status_code == 302
        row = UserSettings.objects.get(user=ann)
        assert row.paused_until == datetime(2026, 3, 20, tzinfo=ZoneInfo("America/New_York"))
        html = ann_client.get(PAGE).content.decode()
        assert "notifications resume on Friday 20 March 2026" in html
        assert form_fields(ann_client)["paused_until"] == "2026-03-20"
        # Clearing the date resumes at once.
        ann_client.post(PAGE, {**form_fields(ann_client), "paused_until": ""})
        row.refresh_from_db()
        assert row.paused_until is None


def test_a_past_pause_shows_as_none(ann, grid):
    UserSettings.objects.create(user=ann, paused_until=datetime(2020, 1, 1, tzinfo=UTC))
    assert prefs.read(ann).paused_until is None


def test_time_zone_offers_a_datalist_and_guesses_only_without_saved_settings(ann_client, ann, grid):
    html = ann_client.get(PAGE).content.decode()
    assert 'list="timezone-list"' in html
    assert '<option value="Europe/Paris">' in html
    assert re.search(r'name="timezone"[^>]*data-guess', html.replace("\n", " "))
    ann_client.post(PAGE, form_fields(ann_client))
    assert "data-guess" not in ann_client.get(PAGE).content.decode()


BAD_FIELDS = [
    ({"timezone": "Mars/Olympus_Mons"}, "id_timezone", "not a known time zone"),
    ({"timezone": ""}, "id_timezone", "choose a time zone"),
    ({"quiet_start": "22:00", "quiet_end": ""}, "id_quiet_end", "set when quiet hours end"),
    ({"quiet_start": "", "quiet_end": "07:00"}, "id_quiet_start", "set when quiet hours start"),
    ({"quiet_start": "22:00", "quiet_end": "22:00"}, "id_quiet_end", "must differ"),
    ({"quiet_start": "25:00", "quiet_end": "07:00"}, "id_quiet_start", "must be a time"),
    ({"digest_hour": "25"}, "id_digest_hour", "from 0 to 23 (got 25)"),
    ({"digest_hour": "eight"}, "id_digest_hour", "from 0 to 23"),
    ({"digest_weekday": "9"}, "id_digest_weekday", "0 (Monday) to 6 (Sunday) (got 9)"),
    ({"paused_until": "2020-01-01"}, "id_paused_until", "must be a day after today"),
    ({"paused_until": "2030-02-30"}, "id_paused_until", "not a date in the calendar"),
    ({"paused_until": "next week"}, "id_paused_until", "must be a date like"),
    ({"mode-orders": "sometimes"}, "mode-orders", "must be one of immediate, daily"),
]


@pytest.mark.parametrize(("change", "input_id", "message"), BAD_FIELDS)
def test_each_bad_field_is_named_and_nothing_is_saved(
    ann_client, ann, grid, change, input_id, message
):
    ann_client.post(PAGE, {**form_fields(ann_client), "timezone": "Europe/Paris"})
    before = stored(ann)
    fields = form_fields(ann_client)
    # Good changes next to the bad one must not be saved either.
    fields.update({"mode-product-news": "daily", "cell-orders-sms": "on", "digest_weekday": "2"})
    fields.update(change)
    response = ann_client.post(PAGE, fields)
    assert response.status_code == 400
    html = response.content.decode()
    assert message.lower() in field_error(html, input_id).lower()
    # The input points at its error, and the summary links to the input.
    tag = re.search(rf'<(?:input|select)[^>]*id="{input_id}"[^>]*>', html.replace("\n", " "))
    assert tag and 'aria-invalid="true"' in tag.group(0)
    assert f"{input_id}-error" in tag.group(0)
    assert re.search(r'id="error-summary"[^>]*role="alert"', html)
    assert f'<a href="#{input_id}">' in html
    assert "Nothing was saved" in html
    assert stored(ann) == before


def test_errors_keep_what_the_user_typed(ann_client, grid):
    fields = form_fields(ann_client)
    fields.update(timezone="Mars/Base", quiet_start="23:15", quiet_end="")
    fields.pop("cell-orders-email")
    html = ann_client.post(PAGE, fields).content.decode()
    assert 'value="Mars/Base"' in html
    assert 'value="23:15"' in html
    reader = FormReader("settings-form")
    reader.feed(html)
    assert "cell-orders-email" not in reader.fields
    assert "data-guess" not in html  # the script must not replace what was typed


def test_several_errors_are_all_listed(ann_client, grid):
    fields = {**form_fields(ann_client), "digest_hour": "25", "digest_weekday": "9"}
    html = ann_client.post(PAGE, fields).content.decode()
    assert "2 problems" in html
    assert field_error(html, "id_digest_hour") and field_error(html, "id_digest_weekday")


# -- CSRF ---------------------------------------------------------------------------


def test_settings_form_needs_its_csrf_token(ann, grid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    fields = form_fields(client)
    token = fields.pop("csrfmiddlewaretoken")
    before = stored(ann)
    assert client.post(PAGE, {**fields, "digest_hour": "20"}).status_code == 403
    assert stored(ann) == before
    response = client.post(PAGE, {**fields, "digest_hour": "20", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert UserSettings.objects.get(user=ann).digest_hour == 20


def test_test_send_needs_its_csrf_token(ann, grid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    assert client.post(TEST_SEND, {"channel": "email"}).status_code == 403
    assert not Event.objects.exists()
    assert mail.outbox == []


# -- "send me a test" ---------------------------------------------------------------


def test_send_a_test_email(ann_client, ann, grid):
    response = ann_client.post(TEST_SEND, {"channel": "email"})
    assert response.status_code == 302
    assert response["Location"] == f"{PAGE}#test-sends"
    [message] = mail.outbox
    assert message.to == ["ann@example.com"]
    assert message.subject == "Test notification: Email works"
    assert "notifications by email reach you" in message.body
    html = ann_client.get(PAGE).content.decode()
    assert "Test on Email: sent to ann@example.com." in html
    assert re.search(
        r'id="test-result-email">\s*Last test, just now: sent to ann@example.com', html
    )
    # On the record, like any notification; the worker has nothing left to do.
    event = Event.objects.get(type="notify.test")
    assert event.status == Event.State.PROCESSED and event.recipients == [ann.pk]
    delivery = Delivery.objects.get(notification__event=event)
    assert (delivery.channel, delivery.status, delivery.attempts) == ("email", "sent", 1)
    assert delivery.attempt_log.get().sent["to"] == "ann@example.com"
    run_until_idle()
    assert len(mail.outbox) == 1


def test_a_test_goes_to_the_chosen_channel_only(ann_client, ann, grid):
    ann_client.post(TEST_SEND, {"channel": "inapp"})
    assert mail.outbox == []
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.status) == ("inapp", "sent")
    item = Notification.objects.get(user=ann)
    assert item.inbox_at is not None and item.title == "Test notification"


def test_a_test_without_an_address_says_so(ann_client, grid):
    ann_client.post(TEST_SEND, {"channel": "sms"})
    html = ann_client.get(PAGE).content.decode()
    assert "Test on SMS: skipped: no address for this channel" in html
    assert Delivery.objects.get().skip_reason == "no_address"


def test_a_test_to_an_unverified_address_is_skipped(ann_client, ann, grid):
    ContactPoint.objects.create(user=ann, kind="phone", address="+447911123456")
    ann_client.post(TEST_SEND, {"channel": "sms"})
    assert "skipped: your address for this channel is not verified yet" in (
        ann_client.get(PAGE).content.decode()
    )


def test_a_failed_test_shows_the_reason(ann_client, ann, grid, twilio_sms):
    ContactPoint.objects.create(
        user=ann, kind="phone", address="+447911123456", verified_at=datetime.now(UTC)
    )
    twilio_sms.refuse("+447911123456", 21614, "'To' number is not a valid mobile number")
    ann_client.post(TEST_SEND, {"channel": "sms"})
    html = ann_client.get(PAGE).content.decode()
    assert "Test on SMS: failed:" in html
    assert "not a valid mobile number" in html
    assert Delivery.objects.get().status == "failed"


def test_a_test_in_quiet_hours_waits_like_any_notification(ann_client, ann, grid):
    UserSettings.objects.create(
        user=ann, timezone="Europe/Paris", quiet_start=time(22), quiet_end=time(7)
    )
    with time_machine.travel(datetime(2026, 3, 10, 22, 30, tzinfo=UTC), tick=False):
        ann_client.post(TEST_SEND, {"channel": "email"})
        ann_client.post(TEST_SEND, {"channel": "inapp"})
        html = ann_client.get(PAGE).content.decode()
    assert mail.outbox == []
    assert "Test on Email: waiting for your quiet hours to end; it goes out at 07:00." in html
    email = Delivery.objects.get(channel="email")
    assert (email.status, email.hold_reason, email.attempts) == ("pending", "quiet_hours", 0)
    assert email.next_attempt_at == datetime(2026, 3, 11, 6, 0, tzinfo=UTC)
    assert Delivery.objects.get(channel="inapp").status == "sent"  # the inbox is not held


def test_a_test_on_an_unknown_channel_is_refused(ann_client, grid):
    response = ann_client.post(TEST_SEND, {"channel": "pigeon"})
    assert response.status_code == 400
    assert "Choose one of your channels to test." in response.content.decode()
    assert not Event.objects.exists()


def test_tests_are_limited_per_hour(ann_client, grid):
    for _ in range(5):
        assert ann_client.post(TEST_SEND, {"channel": "inapp"}).status_code == 302
    response = ann_client.post(TEST_SEND, {"channel": "email"})
    assert response.status_code == 429
    html = response.content.decode()
    assert "You can send 5 tests an hour; try again in" in html
    assert '<a href="#test-sends">' in html  # in the error summary
    assert Event.objects.count() == 5
    assert mail.outbox == []


def test_test_sends_are_counted_per_user(client, make_user, grid):
    for name in ("amy", "ben"):
        user = make_user(name)
        client.force_login(user)
        for _ in range(5):
            assert client.post(TEST_SEND, {"channel": "inapp"}).status_code == 302
    assert Event.objects.count() == 10


def test_page_shows_how_many_tests_are_left(ann_client, grid):
    assert "5 of 5 left this hour" in ann_client.get(PAGE).content.decode()
    ann_client.post(TEST_SEND, {"channel": "inapp"})
    assert "4 of 5 left this hour" in ann_client.get(PAGE).content.decode()


def test_pause_date_must_be_after_today_in_the_users_zone(ann, grid):
    # 23:30 UTC on 10 March is already 11 March in Tokyo.
    now = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    current = prefs.read(ann, now)
    _, errors = prefs.validate(
        {"timezone": "Asia/Tokyo", "paused_until": "2026-03-11"}, ann, current=current, now=now
    )
    assert [e["field"] for e in errors] == ["paused_until"]
    changes, errors = prefs.validate(
        {"timezone": "Asia/Tokyo", "paused_until": "2026-03-12"}, ann, current=current, now=now
    )
    assert errors == []
    assert changes.settings["paused_until"].date() == date(2026, 3, 12)
    _, errors = prefs.validate(
        {"paused_until": (now.date() + timedelta(days=400)).isoformat()},
        ann,
        current=current,
        now=now,
    )
    assert errors[0]["message"] == "can be at most a year from today"
