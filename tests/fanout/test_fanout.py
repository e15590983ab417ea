"""Fan-out in chunks: queries grow with chunks, never with recipients; rows are exact.

Users are members of a Django ``Group`` and a rule sends to ``group:<name>`` on
email and in-app. Some users opt out, some hold email for a digest, some have
no address, some turned the whole category off; every (user, channel) gets
exactly one row with the status their preferences say.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notify import trigger
from notify.fanout.pipeline import fan_out
from notify.models import (
    CategoryPreference,
    ChannelPreference,
    Delivery,
    DeliveryMode,
    Notification,
)
from notify.models.status import Status
from rules.index import rule_index
from rules.recipients import PAGE_SIZE

User = get_user_model()

CHUNK = 1000
CHANNELS = ("email", "inapp")

pytestmark = pytest.mark.slow


def profile(i: int) -> dict[str, bool]:
    """Which preferences user number ``i`` has (several may overlap)."""
    return {
        "no_address": i % 7 == 0,
        "email_off": i % 10 == 0,
        "daily": i % 11 == 0,
        "category_off": i % 13 == 0,
    }


def expected_status(i: int, channel: str) -> tuple[str, str]:
    """The (status, skip reason) preferences give user ``i`` on ``channel``.

    Written out independently of ``notify.preferences.decide``: no address
    beats everything on email; then "off" opts out of every channel; then the
    email cell; a daily digest holds email only.
    """
    p = profile(i)
    if channel == "email" and p["no_address"]:
        return Status.SKIPPED, "no_address"
    if p["category_off"]:
        return Status.SKIPPED, "opted_out"
    if channel == "email" and p["email_off"]:
        return Status.SKIPPED, "opted_out"
    if channel == "email" and p["daily"]:
        return Status.DIGEST, "daily"
    return Status.PENDING, ""


def make_members(group_name: str, count: int, category) -> list[int]:
    """``count`` users in a new group, with the preferences of ``profile``."""
    prefix = group_name.lower()
    users = User.objects.bulk_create(
        [
            User(
                username=f"{prefix}{i}",
                email="" if profile(i)["no_address"] else f"{prefix}{i}@example.com",
                password="!",
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    ids = [u.pk for u in users]
    group = Group.objects.create(name=group_name)
    Membership = User.groups.through
    Membership.objects.bulk_create(
        [Membership(user_id=pk, group_id=group.pk) for pk in ids], batch_size=5000
    )
    ChannelPreference.objects.bulk_create(
        [
            ChannelPreference(user_id=pk, category=category, channel="email", enabled=False)
            for i, pk in enumerate(ids)
            if profile(i)["email_off"]
        ]
    )
    modes = []
    for i, pk in enumerate(ids):
        if profile(i)["category_off"]:
            modes.append(CategoryPreference(user_id=pk, category=category, mode=DeliveryMode.OFF))
        elif profile(i)["daily"]:
            modes.append(CategoryPreference(user_id=pk, category=category, mode=DeliveryMode.DAILY))
    CategoryPreference.objects.bulk_create(modes)
    return ids


@pytest.fixture
def chunked(settings):
    settings.NOTIFY = {**settings.NOTIFY, "FANOUT_CHUNK_SIZE": CHUNK}


def count_fanout_queries(event) -> tuple[int, int, object]:
    """(all queries, group-member page queries, stats) of one fan-out."""
    rule_index.get()  # compiled before measuring, as in a running worker
    with CaptureQueriesContext(connection) as captured:
        stats = fan_out(event)
    pages = sum("auth_user_groups" in q["sql"] for q in captured.captured_queries)
    return len(captured), pages, stats


def assert_rows(event, ids: list[int]) -> None:
    notifications = Notification.objects.filter(event=event)
    assert notifications.count() == len(ids)
    assert sorted(notifications.values_list("user_id", flat=True)) == ids
    deliveries = Delivery.objects.filter(notification__event=event)
    assert deliveries.count() == len(ids) * len(CHANNELS)
    position = {pk: i for i, pk in enumerate(ids)}
    actual = Counter(
        (channel, status, reason)
        for channel, status, reason in deliveries.values_list("channel", "status", "skip_reason")
    )
    expected = Counter(
        (channel, *expected_status(i, channel)) for i in range(len(ids)) for channel in CHANNELS
    )
    assert actual == expected
    # And per user, not only in total: spot-check every 97th user.
    for user_id, channel, status, reason in deliveries.filter(
        notification__user_id__in=ids[::97]
    ).values_list("notification__user_id", "channel", "status", "skip_reason"):
        assert (status, reason) == expected_status(position[user_id], channel)


def test_fanout_queries_grow_with_chunks_not_recipients(make_rule, category, chunked):
    small_ids = make_members("Small", 1_000, category)
    large_ids = make_members("Large", 10_000, category)
    make_rule(event_type="team.small", recipients=["group:Small"], channels=list(CHANNELS))
    make_rule(event_type="team.large", recipients=["group:Large"], channels=list(CHANNELS))
    small_event = trigger("team.small", {})
    large_event = trigger("team.large", {})

    q1, pages1, stats1 = count_fanout_queries(small_event)
    q10, pages10, stats10 = count_fanout_queries(large_event)

    assert (stats1.chunks, stats10.chunks) == (1, 10)
    assert (stats1.recipients, stats10.recipients) == (1_000, 10_000)
    # Member ids are read in pages of PAGE_SIZE (the last page is the short one).
    assert pages1 == 1_000 // PAGE_SIZE + 1
    assert pages10 == 10_000 // PAGE_SIZE + 1
    # Without the paging, one run is "constant + chunks x per chunk".
    per_chunk, rest = divmod((q10 - pages10) - (q1 - pages1), 10 - 1)
    assert rest == 0, "the 10-chunk run is not 9 chunks more than the 1-chunk run"
    constant = (q1 - pages1) - per_chunk
    assert q10 - pages10 == constant + 10 * per_chunk
    assert q1 - pages1 - constant == per_chunk
    assert 0 <= constant <= 6, f"{constant} queries outside the chunks"
    assert per_chunk <= 12, f"{per_chunk} queries per chunk"

    assert_rows(small_event, small_ids)
    assert_rows(large_event, large_ids)
    assert stats10.notifications == 10_000
    assert stats10.deliveries == 20_000


def test_fanout_twice_writes_nothing_new(make_rule, category, chunked):
    ids = make_members("Team", 2_500, category)
    make_rule(event_type="team.news", recipients=["group:Team"], channels=list(CHANNELS))
    event = trigger("team.news", {})

    fan_out(event)
    before = list(
        Delivery.objects.filter(notification__event=event)
        .order_by("pk")
        .values_list("pk", "notification_id", "channel", "status", "skip_reason")
    )
    # A worker sent some of them in between: a second fan-out must not reset them.
    sent = [pk for pk, _, _, status, _ in before if status == Status.PENDING][:10]
    Delivery.objects.filter(pk__in=sent).update(status=Status.SENT)

    stats = fan_out(event)

    assert stats.recipients == 2_500
    assert Notification.objects.filter(event=event).count() == 2_500
    after = list(
        Delivery.objects.filter(notification__event=event)
        .order_by("pk")
        .values_list("pk", "notification_id", "channel", "status", "skip_reason")
    )
    assert len(after) == len(before) == 2 * 2_500
    assert [row[:3] for row in after] == [row[:3] for row in before]
    assert Delivery.objects.filter(pk__in=sent, status=Status.SENT).count() == 10
    Delivery.objects.filter(pk__in=sent).update(status=Status.PENDING)
    assert_rows(event, ids)


@pytest.mark.parametrize("chunk", [99, 120])
def test_fanout_rows_are_exact_whatever_the_chunk_size(make_rule, category, settings, chunk):
    """250 recipients in chunks of 99 or 120 (the last one short): every row
    exact, the decision counts those of the rows, and a second fan-out adds
    nothing and changes nothing."""
    settings.NOTIFY = {**settings.NOTIFY, "FANOUT_CHUNK_SIZE": chunk}
    ids = make_members("Edge", 250, category)
    make_rule(event_type="team.edge", recipients=["group:Edge"], channels=list(CHANNELS))
    event = trigger("team.edge", {})

    stats = fan_out(event)
    before = list(Delivery.objects.filter(notification__event=event).order_by("pk").values_list())
    again = fan_out(event)

    assert stats.chunks == -(-250 // chunk)
    assert (stats.notifications, stats.deliveries) == (again.notifications, again.deliveries)
    assert (stats.notifications, stats.deliveries) == (250, 500)
    assert_rows(event, ids)
    after = list(Delivery.objects.filter(notification__event=event).order_by("pk").values_list())
    assert after == before
    assert stats.decisions == Counter(
        Delivery.objects.filter(notification__event=event).values_list("status", flat=True)
    )
