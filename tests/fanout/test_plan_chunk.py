"""``plan_chunk`` shares the decisions of users with no preferences of their
own: the shared plan must be exactly what deciding each user alone gives."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

from notify.fanout.sequence import plan_chunk, plan_user
from notify.preferences.decide import Address, CategoryInfo, UserPrefs

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CHANNELS = {"email": "email", "sms": "phone", "inapp": None}


def variants(user_id: int) -> UserPrefs:
    """Users cycling through every address state and preference that decides."""
    addresses = [
        {},
        {"email": Address("a@example.com", False)},
        {"email": Address("Bounced@example.com")},
        {"email": Address("a@example.com"), "phone": Address("+15550100")},
    ][user_id % 4]
    extra = [
        {},
        {"modes": {1: "daily"}},
        {"modes": {1: "off"}},
        {"channels": {(1, "email"): False}},
        {"paused_until": NOW + timedelta(days=1)},
        {"paused_until": NOW - timedelta(days=1)},
        {"quiet_start": time(11), "quiet_end": time(13)},
        {"is_active": False},
        {},
        {},
    ][(user_id // 4) % 10]
    return UserPrefs(
        user_id=user_id,
        addresses=addresses,
        suppressed=frozenset({("email", "bounced@example.com")}),
        **extra,
    )


def test_shared_decisions_equal_each_users_own():
    prefs = {i: variants(i) for i in range(400)}
    for category, (due_at, hold) in itertools.product(
        [CategoryInfo(1, "orders"), CategoryInfo(1, "security", critical=True)],
        [(None, ""), (NOW + timedelta(hours=2), "delayed")],
    ):
        planned = plan_chunk(
            list(prefs), category, CHANNELS, prefs, NOW, due_at=due_at, hold_reason=hold
        )
        alone = [
            plan_user(category, CHANNELS, prefs[p.user_id], NOW, due_at, hold) for p in planned
        ]
        assert [p.deliveries for p in planned] == alone
        assert len(planned) == 400


def test_a_user_missing_from_the_loaded_preferences_is_left_out():
    prefs = {1: variants(1)}
    planned = plan_chunk([1, 2], CategoryInfo(1, "orders"), CHANNELS, prefs, NOW)
    assert [p.user_id for p in planned] == [1]
