"""The settings grid shows, per category, only the channels its rules can send
on and that the user has (or can add) an address for (``notify.pages.grid``)."""

from __future__ import annotations

import re

import pytest

from notify.models import Category, ChannelPreference, ContactPoint
from notify.pages.grid import plan_grid, rule_channels_by_category
from notify.pages.prefs import Column
from rules.models import Rule
from tests.pages.test_settings_page import (  # noqa: F401 -- fixtures
    CHANNELS,
    PAGE,
    ann_client_fixture,
    ann_fixture,
    form_fields,
    page_channels_fixture,
)

COLUMNS = [
    Column("email", "Email", "email"),
    Column("sms", "SMS", "phone"),
    Column("inapp", "In-app", None),
    Column("push", "Push", "fcm"),
]


# -- the pure decision ------------------------------------------------------------


def test_rules_without_channels_use_the_default_ones():
    rules = [(1, ["sms"]), (1, []), (2, ["inapp"])]
    assert rule_channels_by_category(rules, ("email", "inapp")) == {
        1: {"sms", "email", "inapp"},
        2: {"inapp"},
    }


def test_a_category_shows_only_what_its_rules_use():
    grid = plan_grid(
        COLUMNS, [1, 2], {1: {"email"}, 2: {"sms", "inapp"}}, set(), {"email", "phone"}
    )
    assert grid.shown == {1: {"email"}, 2: {"sms", "inapp"}}
    assert [c.alias for c in grid.columns] == ["email", "sms", "inapp"]
    # No address yet, but one can be added: shown, with a hint on the column.
    assert grid.no_address == {"email", "sms"}


def test_a_channel_the_user_cannot_reach_is_not_shown():
    """FCM tokens come from apps: without one, push is never drawn."""
    everything = {"email", "sms", "inapp", "push"}
    grid = plan_grid(COLUMNS, [1], {1: everything}, {"email"}, {"email", "phone"})
    assert grid.shown == {1: {"email", "sms", "inapp"}}
    grid = plan_grid(COLUMNS, [1], {1: everything}, {"email", "fcm"}, {"email", "phone"})
    assert grid.shown == {1: everything}
    assert grid.no_address == {"sms"}


def test_a_category_without_rules_shows_every_reachable_channel():
    grid = plan_grid(COLUMNS, [1], {}, set(), {"email", "phone"})
    assert grid.shown == {1: {"email", "sms", "inapp"}}


# -- the page ---------------------------------------------------------------------


@pytest.fixture(name="ruled")
def ruled_fixture(db, page_channels):
    """Orders go out by email and in-app; alerts by SMS only."""
    orders = Category.objects.create(
        key="orders", name="Orders", default_channels=["email", "inapp"]
    )
    alerts = Category.objects.create(key="alerts", name="Alerts", default_channels=["sms"])
    for category, channels in ((orders, ["email", "inapp"]), (alerts, ["sms"])):
        Rule.objects.create(
            name=category.key,
            event_type=f"{category.key}.x",
            category=category,
            recipients=["explicit"],
            message="order_shipped",
            channels=channels,
        )
    # A switched-off rule does not count.
    Rule.objects.create(
        name="old",
        event_type="orders.y",
        category=orders,
        recipients=["explicit"],
        message="order_shipped",
        channels=["chat"],
        is_active=False,
    )
    return orders, alerts


def _headers(html: str) -> list[str]:
    return re.findall(r'<th scope="col" class="cell">([^<]+)', html)


def test_page_draws_only_the_channels_the_rules_use(ann_client, ruled):
    html = ann_client.get(PAGE).content.decode()
    # Chat and Webhook: no active rule sends on them.
    assert _headers(html) == ["Email", "SMS", "In-app"]
    fields = form_fields(ann_client)
    assert {"cell-orders-email", "cell-orders-inapp", "cell-alerts-sms"} <= set(fields)
    assert 'id="cell-orders-sms"' not in html and 'id="cell-alerts-email"' not in html
    assert "SMS: not used for Orders" in html
    # Ann has no phone yet: the column says where to add one.
    sms_header = re.search(r'<th scope="col" class="cell">SMS.*?</th>', html).group(0)
    assert 'href="#add-contact"' in sms_header


def test_the_hint_goes_once_the_user_has_an_address(ann, ann_client, ruled):
    ContactPoint.objects.create(user=ann, kind="phone", address="+447911123456")
    html = ann_client.get(PAGE).content.decode()
    sms_header = re.search(r'<th scope="col" class="cell">SMS.*?</th>', html).group(0)
    assert "add an address" not in sms_header


def test_saving_keeps_the_choice_of_a_hidden_cell(ann, ann_client, ruled):
    orders, _ = ruled
    ChannelPreference.objects.create(user=ann, category=orders, channel="sms", enabled=True)
    fields = form_fields(ann_client)
    fields.pop("cell-orders-inapp")
    response = ann_client.post(PAGE, fields)
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = dict(
        ChannelPreference.objects.filter(user=ann, category=orders).values_list(
            "channel", "enabled"
        )
    )
    assert stored["sms"] is True  # hidden: not read back as "off"
    assert stored["inapp"] is False


@pytest.mark.browser
def test_browser_grid_shows_used_channels_only(page, live_server, login, ann, ruled, screenshot):
    login(page, "ann", "pw-ann")
    page.goto(f"{live_server.url}{PAGE}")
    headers = page.locator(".pref-grid thead th.cell")
    assert [h.inner_text().split("\n")[0].strip() for h in headers.all()] == [
        "Email",
        "SMS",
        "In-app",
    ]
    assert page.locator("#cell-orders-email").is_checked()
    assert page.locator("#cell-orders-sms").count() == 0
    assert page.locator("#row-orders td.not-used").count() == 1
    page.locator(".pref-grid").scroll_into_view_if_needed()
    screenshot(page, "settings-grid-used-channels", full_page=False)
    page.click("th.cell >> text=add an address")
    assert page.url.endswith("#add-contact")
