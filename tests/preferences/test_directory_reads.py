"""The fan-out reads of ``notify.preferences.directory``: group members in
pages off the (group, user) index, and preferences from one raw joined query
(settings and several categories' modes per user, converted values)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notify.models import Category, CategoryPreference, UserSettings
from notify.preferences.directory import DatabaseDirectory, load_preferences


@pytest.fixture
def members(make_user):
    """Nine users: six in "team" (one of them inactive), three in "other"."""
    team, other = Group.objects.create(name="team"), Group.objects.create(name="other")
    users = [make_user() for _ in range(9)]
    for i, user in enumerate(users):
        (team if i % 3 else other).user_set.add(user)
    users[4].is_active = False
    users[4].save()
    return users


def test_group_members_come_in_ascending_pages_of_active_members_only(members):
    directory = DatabaseDirectory()
    active = [u.pk for i, u in enumerate(members) if i % 3 and u.is_active]

    first = directory.group_member_ids("team", 0, 2)
    rest = directory.group_member_ids("team", first[-1], 10)

    assert first + rest == active == sorted(active)
    assert directory.group_member_ids("team", active[-1], 10) == []


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
def test_a_page_of_group_members_is_one_index_range(members, analyzed):
    """No sort of the group's members per page (SQLite said "USE TEMP B-TREE
    FOR ORDER BY" for every page before the (group, user) index), with or
    without the planner's statistics: once ANALYZE had run (as on a real
    database, or after another test), joining the group by name made SQLite
    start from the group table and sort the members again."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query plan")
    with connection.cursor() as cursor:
        # Statistics are the planner's input: computed here from this test's rows,
        # or none (another test's ANALYZE of its own rows made this flaky).
        if analyzed:
            cursor.execute("ANALYZE")
        else:
            cursor.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'")
            if cursor.fetchone():
                cursor.execute("DELETE FROM sqlite_stat1")
                cursor.execute("ANALYZE sqlite_schema")  # reload: no statistics
    with CaptureQueriesContext(connection) as queries:
        DatabaseDirectory().group_member_ids("team", 0, 10)
    page = queries.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + page)
        plan = " / ".join(row[-1] for row in cursor.fetchall())
    assert "notify_group_members_idx" in plan
    assert "TEMP B-TREE" not in plan, plan


def test_preferences_read_settings_and_every_wanted_category_mode(make_user):
    user, plain = make_user(), make_user()
    orders = Category.objects.create(key="o", name="Orders")
    comments = Category.objects.create(key="c", name="Comments")
    ignored = Category.objects.create(key="i", name="Ignored")
    for category, mode in ((orders, "daily"), (comments, "off"), (ignored, "weekly")):
        CategoryPreference.objects.create(user=user, category=category, mode=mode)
    paused = datetime(2026, 12, 24, 8, 30, tzinfo=UTC)
    UserSettings.objects.create(
        user=user,
        timezone="Europe/Paris",
        locale="fr",
        quiet_start=time(22),
        quiet_end=time(7, 15),
        paused_until=paused,
        digest_hour=6,
        digest_weekday=4,
    )

    prefs = load_preferences([user.pk, plain.pk], [orders.pk, comments.pk], ["email"])

    mine = prefs[user.pk]
    assert mine.modes == {orders.pk: "daily", comments.pk: "off"}
    assert (mine.timezone, mine.locale, mine.digest_hour, mine.digest_weekday) == (
        "Europe/Paris",
        "fr",
        6,
        4,
    )
    assert (mine.quiet_start, mine.quiet_end, mine.paused_until) == (time(22), time(7, 15), paused)
    assert mine.is_active is True
    assert mine.addresses["email"].value == user.email
    other = prefs[plain.pk]
    assert other.modes == {} and other.paused_until is None and other.quiet_start is None
    assert (other.timezone, other.digest_hour) == ("UTC", 8)
    # Modes are the user's own: adding one for a user leaves the others' alone.
    assert prefs[plain.pk].modes is not mine.modes
