"""``notify.preferences.decide``: what preferences say, as pure data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notify.preferences.decide import (
    DIGEST,
    INACTIVE,
    NO_ADDRESS,
    OPTED_OUT,
    PAUSED,
    SEND,
    SKIP,
    SUPPRESSED,
    UNVERIFIED,
    Address,
    CategoryInfo,
    Decision,
    UserPrefs,
    decide,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORDERS = CategoryInfo(id=1, key="orders")
SECURITY = CategoryInfo(id=2, key="security", critical=True)
NEWSLETTER = CategoryInfo(id=3, key="newsletter", opt_in=True)
EMAIL = Address("ann@example.com")


def prefs(**fields) -> UserPrefs:
    fields.setdefault("addresses", {"email": EMAIL})
    return UserPrefs(user_id=1, **fields)


def email(category: CategoryInfo, user: UserPrefs) -> Decision:
    return decide(category, "email", "email", user, NOW)


def inapp(category: CategoryInfo, user: UserPrefs) -> Decision:
    return decide(category, "inapp", None, user, NOW)


def test_defaults_send_now_with_the_address():
    assert email(ORDERS, prefs()) == Decision(SEND, address="ann@example.com")
    assert inapp(ORDERS, prefs()) == Decision(SEND)


# -- critical categories -------------------------------------------------------------


def test_critical_ignores_channel_and_category_opt_outs():
    user = prefs(
        modes={SECURITY.id: "off"},
        channels={(SECURITY.id, "email"): False, (SECURITY.id, "inapp"): False},
    )
    assert email(SECURITY, user) == Decision(SEND, address="ann@example.com")
    assert inapp(SECURITY, user).action == SEND


def test_critical_ignores_pause_and_digest():
    user = prefs(paused_until=NOW + timedelta(days=1), modes={SECURITY.id: "daily"})
    assert email(SECURITY, user).action == SEND


@pytest.mark.parametrize(
    ("addresses", "suppressed", "reason"),
    [
        ({}, frozenset(), NO_ADDRESS),
        ({"email": Address("ann@example.com", verified=False)}, frozenset(), UNVERIFIED),
        ({"email": EMAIL}, frozenset({("email", "ann@example.com")}), SUPPRESSED),
    ],
    ids=["missing", "unverified", "suppressed"],
)
def test_critical_does_not_override_the_address_checks(addresses, suppressed, reason):
    user = prefs(addresses=addresses, suppressed=suppressed)
    decision = email(SECURITY, user)
    assert (decision.action, decision.reason) == (SKIP, reason)
    # The in-app channel needs no address, so it still goes out.
    assert inapp(SECURITY, user).action == SEND


def test_suppression_matches_the_address_case_insensitively():
    user = prefs(
        addresses={"email": Address("Ann@Example.com")},
        suppressed=frozenset({("email", "ann@example.com")}),
    )
    assert email(ORDERS, user) == Decision(SKIP, SUPPRESSED, "Ann@Example.com")


def test_address_checks_come_before_opt_outs():
    user = prefs(addresses={}, modes={ORDERS.id: "off"})
    assert email(ORDERS, user).reason == NO_ADDRESS


# -- opt-in, default channels, modes -----------------------------------------------------


def test_opt_in_category_is_off_until_the_user_enables_a_channel():
    assert email(NEWSLETTER, prefs()) == Decision(SKIP, OPTED_OUT, "ann@example.com")
    assert inapp(NEWSLETTER, prefs()).reason == OPTED_OUT
    enabled = prefs(channels={(NEWSLETTER.id, "email"): True})
    assert email(NEWSLETTER, enabled).action == SEND
    assert inapp(NEWSLETTER, enabled).reason == OPTED_OUT  # only the cell turned on


def test_default_channels_limit_where_a_category_goes_by_default():
    inapp_only = CategoryInfo(id=4, key="mentions", default_channels=frozenset({"inapp"}))
    assert inapp(inapp_only, prefs()).action == SEND
    assert email(inapp_only, prefs()).reason == OPTED_OUT
    # An explicit cell beats the default.
    assert email(inapp_only, prefs(channels={(4, "email"): True})).action == SEND


def test_a_cell_of_another_category_does_not_count():
    assert email(ORDERS, prefs(channels={(NEWSLETTER.id, "email"): False})).action == SEND


def test_mode_off_skips_every_channel():
    user = prefs(modes={ORDERS.id: "off"})
    assert email(ORDERS, user) == Decision(SKIP, OPTED_OUT, "ann@example.com")
    assert inapp(ORDERS, user) == Decision(SKIP, OPTED_OUT)


def test_category_default_mode_applies_without_a_row():
    quiet = CategoryInfo(id=5, key="digest-only", default_mode="weekly")
    assert email(quiet, prefs()) == Decision(DIGEST, "weekly", "ann@example.com")
    assert email(quiet, prefs(modes={5: "immediate"})).action == SEND


@pytest.mark.parametrize("mode", ["daily", "weekly"])
def test_digest_mode_holds_email_but_sends_inapp_now(mode):
    user = prefs(modes={ORDERS.id: mode})
    assert email(ORDERS, user) == Decision(DIGEST, mode, "ann@example.com")
    assert inapp(ORDERS, user) == Decision(SEND)


def test_digest_mode_with_the_channel_off_is_an_opt_out():
    user = prefs(modes={ORDERS.id: "daily"}, channels={(ORDERS.id, "email"): False})
    assert email(ORDERS, user).reason == OPTED_OUT


# -- pause and inactive users -------------------------------------------------------------


def test_paused_user_is_skipped_until_the_pause_ends():
    user = prefs(paused_until=NOW + timedelta(hours=1))
    assert email(ORDERS, user) == Decision(SKIP, PAUSED, "ann@example.com")
    assert inapp(ORDERS, user).reason == PAUSED
    later = NOW + timedelta(hours=1, seconds=1)
    assert decide(ORDERS, "email", "email", user, later).action == SEND
    ended = prefs(paused_until=NOW - timedelta(seconds=1))
    assert email(ORDERS, ended).action == SEND


def test_inactive_user_gets_nothing_not_even_critical():
    user = prefs(is_active=False)
    assert email(ORDERS, user) == Decision(SKIP, INACTIVE)
    assert email(SECURITY, user) == Decision(SKIP, INACTIVE)
    assert inapp(SECURITY, user) == Decision(SKIP, INACTIVE)
