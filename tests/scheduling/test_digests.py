"""Digests end to end against the SMTP peer: built at each user's local hour,
sent once, items claimed once, errors retried, quiet hours respected, and
DST changes in four zones neither skip nor double a digest."""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.db import connection

from notify import trigger
from notify.fanout.pipeline import process_event
from notify.models import (
    Category,
    CategoryPreference,
    Delivery,
    DeliveryAttempt,
    Digest,
    UserSettings,
)
from notify.models.status import Status
from notify.preferences.localtime import zone
from notify.scheduling.digests.build import create_and_claim
from notify.scheduling.digests.periods import latest_due
from notify.scheduling.digests.send import build_and_send_due_digests


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def comments(db):
    return Category.objects.create(key="comments", name="Comments")


@pytest.fixture
def rules(make_rule, comments):
    make_rule(name="shipped", channels=["email", "inapp"])
    make_rule(
        name="commented",
        event_type="comment.posted",
        category=comments,
        message="comment_posted",
        channels=["email"],
    )


def digest_user(make_user, categories, name, *, tz="UTC", hour=8, mode="daily", **settings):
    user = make_user(name, first_name=name.title())
    UserSettings.objects.create(user=user, timezone=tz, digest_hour=hour, **settings)
    for category in categories:
        CategoryPreference.objects.create(user=user, category=category, mode=mode)
    return user


def shipped(*users, **payload):
    event = trigger("order.shipped", {"order_id": "A1", **payload}, recipients=list(users))
    process_event(event.pk)
    return event


def commented(*users, title="the roadmap"):
    event = trigger("comment.posted", {"title": title, "comment": "+1"}, recipients=list(users))
    process_event(event.pk)
    return event


def test_daily_digest_goes_out_once_at_the_users_local_hour(
    smtp_mailer, make_user, rules, category, comments
):
    alice = digest_user(make_user, [category, comments], "alice", tz="Europe/Berlin", hour=8)
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(alice, order_id="A1", url="https://shop.test/orders/A1")
        shipped(alice, order_id="A2")
        commented(alice)
        held = Delivery.objects.filter(channel="email")
        assert {(d.status, d.skip_reason, d.digest_id) for d in held} == {
            (Status.DIGEST, "daily", None)
        }
        # 13:00 in Berlin: today's 08:00 passed before these arrived; nothing is due.
        assert build_and_send_due_digests().built == 0
        clock.move_to(utc(2026, 11, 21, 6, 59))  # 07:59 in Berlin
        assert build_and_send_due_digests().built == 0
        assert not Digest.objects.exists()

        clock.move_to(utc(2026, 11, 21, 7))  # 08:00 in Berlin (CET, UTC+1)
        stats = build_and_send_due_digests()
        assert (stats.built, stats.items, stats.sent) == (1, 3, 1)
        assert build_and_send_due_digests().built == 0  # the next tick: nothing twice
        clock.move_to(utc(2026, 11, 21, 7, 15))
        assert build_and_send_due_digests().sent == 0

    [message] = smtp_mailer.messages
    assert message.rcpt_tos == ("alice@example.com",)
    assert message.subject == "Your daily digest: 3 new notifications"
    assert "Saturday 21 November 2026" in message.text
    assert "Orders (2)" in message.text and "Comments (1)" in message.text
    assert "Order A1 shipped" in message.text and "Order A2 shipped" in message.text
    assert "https://shop.test/orders/A1" in message.text
    assert "Someone commented on the roadmap" in message.text
    assert re.search(
        r'<a href="https://shop.test/orders/A1"[^>]*>Order A1 shipped</a>', message.html
    )
    assert message.headers["X-Notify-Digest"]
    assert "(No more Orders emails: http://127.0.0.1:8000/unsubscribe/" in message.text
    assert "No more Comments emails</a>" in message.html

    digest = Digest.objects.get()
    assert (digest.user_id, digest.channel, digest.frequency, digest.period) == (
        alice.pk,
        "email",
        "daily",
        "2026-11-21",
    )
    assert (digest.status, digest.item_count, digest.attempts) == (Status.SENT, 3, 1)
    assert digest.provider == "smtp"
    assert digest.provider_message_id == message.message_id
    assert digest.sent_at == utc(2026, 11, 21, 7)
    assert digest.due_at == utc(2026, 11, 21, 7)
    items = Delivery.objects.filter(channel="email")
    assert {(d.status, d.digest_id, d.provider_message_id) for d in items} == {
        (Status.SENT, digest.pk, message.message_id)
    }
    attempts = DeliveryAttempt.objects.filter(delivery__in=items)
    assert {(a.number, a.outcome, a.sent["digest"]) for a in attempts} == {
        (1, DeliveryAttempt.Outcome.SENT, digest.pk)
    }
    # The in-app items were never held.
    assert set(Delivery.objects.filter(channel="inapp").values_list("status", flat=True)) == {
        Status.PENDING
    }


def test_items_after_the_hour_wait_for_the_next_day_and_empty_digests_are_not_sent(
    smtp_mailer, make_user, rules, category
):
    bob = digest_user(make_user, [category], "bob", hour=8)
    carol = digest_user(make_user, [category], "carol", hour=8)  # never gets anything
    with time_machine.travel(utc(2026, 11, 20, 9), tick=False) as clock:
        shipped(bob, order_id="B1")
        assert build_and_send_due_digests().sent == 0  # today's 08:00 had passed
        clock.move_to(utc(2026, 11, 21, 8))
        assert build_and_send_due_digests().sent == 1
        shipped(bob, order_id="B2")  # right after today's digest: tomorrow's
        assert build_and_send_due_digests().sent == 0
        clock.move_to(utc(2026, 11, 22, 8))
        assert build_and_send_due_digests().sent == 1
    first, second = smtp_mailer.messages
    assert "Order B1 shipped" in first.text and "B2" not in first.text
    assert (
        "Order B2 shipped" in second.text and "Order B1" not in second.text
    )  # (a token may hold "B1")
    assert not Digest.objects.filter(user=carol).exists()
    assert list(Digest.objects.order_by("period").values_list("period", flat=True)) == [
        "2026-11-21",
        "2026-11-22",
    ]


def test_weekly_digest_on_the_chosen_weekday(smtp_mailer, make_user, rules, category):
    dana = digest_user(make_user, [category], "dana", hour=9, mode="weekly", digest_weekday=2)
    with time_machine.travel(utc(2026, 11, 16, 10), tick=False) as clock:  # a Monday
        shipped(dana, order_id="W1")
        for day in range(1, 10):
            clock.move_to(utc(2026, 11, 16 + day, 9, 30))
            shipped(dana, order_id=f"W{day + 1}")
            build_and_send_due_digests()
    sent = list(Digest.objects.order_by("period"))
    assert [(d.period, d.sent_at.date().isoformat()) for d in sent] == [
        ("2026-W47", "2026-11-18"),  # Wednesday: W1, W2 (W3 came at 09:30, after 09:00)
        ("2026-W48", "2026-11-25"),
    ]
    first, second = smtp_mailer.messages
    assert first.subject == "Your weekly digest: 2 new notifications"
    assert "the week of Monday 16 November 2026" in first.text
    assert second.subject == "Your weekly digest: 7 new notifications"


def test_critical_categories_never_wait_for_a_digest(make_user, make_rule, category):
    security = Category.objects.create(key="security", name="Security", critical=True)
    make_rule(name="login", event_type="security.login", category=security, channels=["email"])
    erin = digest_user(make_user, [security], "erin")
    event = trigger("security.login", {}, recipients=[erin])
    process_event(event.pk)
    assert Delivery.objects.get().status == Status.PENDING


def test_a_transient_error_is_retried_at_a_later_tick(smtp_mailer, make_user, rules, category):
    frank = digest_user(make_user, [category], "frank", hour=8)
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(frank)
        clock.move_to(utc(2026, 11, 21, 8))
        smtp_mailer.defer_next(1)
        stats = build_and_send_due_digests()
        assert (stats.built, stats.retried, stats.sent) == (1, 1, 0)
        digest = Digest.objects.get()
        assert digest.status == Status.PENDING
        assert digest.attempts == 1
        assert "451" in digest.error_message
        assert digest.due_at > utc(2026, 11, 21, 8)
        item = Delivery.objects.get(channel="email")
        assert (item.status, item.digest_id) == (Status.DIGEST, digest.pk)  # still claimed
        assert build_and_send_due_digests().sent == 0  # not due yet
        clock.move_to(digest.due_at)
        assert build_and_send_due_digests().sent == 1
    digest.refresh_from_db()
    assert (digest.status, digest.attempts, digest.error_message) == (Status.SENT, 2, "")
    assert len(smtp_mailer.messages) == 1
    assert Delivery.objects.get(channel="email").status == Status.SENT


def test_a_permanent_error_fails_the_digest_and_its_items(smtp_mailer, make_user, rules, category):
    gina = digest_user(make_user, [category], "gina", hour=8)
    smtp_mailer.reject("gina@example.com")
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(gina)
        clock.move_to(utc(2026, 11, 21, 8))
        assert build_and_send_due_digests().failed == 1
        clock.move_to(utc(2026, 11, 21, 9))
        assert build_and_send_due_digests().failed == 0
    digest = Digest.objects.get()
    assert digest.status == Status.FAILED
    assert "550" in digest.error_message
    item = Delivery.objects.get(channel="email")
    assert (item.status, item.error_code) == (Status.FAILED, "550")
    assert item.attempt_log.get().outcome == DeliveryAttempt.Outcome.PERMANENT


def test_quiet_hours_hold_a_digest_until_they_end(smtp_mailer, make_user, rules, category):
    hana = digest_user(
        make_user, [category], "hana", hour=8, quiet_start=time(22), quiet_end=time(9)
    )
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(hana)
        clock.move_to(utc(2026, 11, 21, 8))
        assert build_and_send_due_digests().held == 1
        digest = Digest.objects.get()
        assert (digest.status, digest.attempts, digest.due_at) == (
            Status.PENDING,
            0,
            utc(2026, 11, 21, 9),
        )
        clock.move_to(utc(2026, 11, 21, 9))
        assert build_and_send_due_digests().sent == 1
    assert len(smtp_mailer.messages) == 1


def test_items_opted_out_since_are_left_out(smtp_mailer, make_user, rules, category, comments):
    ivan = digest_user(make_user, [category, comments], "ivan", hour=8)
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(ivan)
        commented(ivan)
        CategoryPreference.objects.filter(user=ivan, category=comments).update(mode="off")
        clock.move_to(utc(2026, 11, 21, 8))
        build_and_send_due_digests()
    [message] = smtp_mailer.messages
    assert message.subject == "Your daily digest: 1 new notification"
    skipped = Delivery.objects.get(notification__category=comments)
    assert (skipped.status, skipped.skip_reason) == (Status.SKIPPED, "opted_out")
    assert Digest.objects.get().item_count == 1


def test_a_period_is_built_once_and_an_item_claimed_once(make_user, rules, category):
    june = digest_user(make_user, [category], "june", hour=8)
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False):
        shipped(june)
    due = latest_due(utc(2026, 11, 21, 9), "daily", "UTC", 8)
    assert create_and_claim(june.pk, "email", due, utc(2026, 11, 21, 9)) == 1
    assert create_and_claim(june.pk, "email", due, utc(2026, 11, 21, 9)) == 0  # unique row
    # Another period cannot take an item already claimed: and an empty row is not kept.
    later = latest_due(utc(2026, 11, 22, 9), "daily", "UTC", 8)
    assert create_and_claim(june.pk, "email", later, utc(2026, 11, 22, 9)) == 0
    assert Digest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_ticks_send_each_digest_once(smtp_mailer, make_user, make_rule, category):
    make_rule(name="shipped", channels=["email"])
    users = [digest_user(make_user, [category], f"u{i}", hour=8) for i in range(12)]
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        for _ in range(3):
            shipped(*users)
        clock.move_to(utc(2026, 11, 21, 8, 5))
        errors = []

        def tick():
            try:
                build_and_send_due_digests()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=tick) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert sorted(m.rcpt_tos[0] for m in smtp_mailer.messages) == sorted(u.email for u in users)
    assert Digest.objects.filter(status=Status.SENT).count() == 12
    assert set(Digest.objects.values_list("item_count", flat=True)) == {3}
    assert Delivery.objects.filter(status=Status.SENT, digest__isnull=False).count() == 36


# -- across DST changes, four zones, a tick every 15 minutes ----------------------------------

TICK = timedelta(minutes=15)
# (user, zone, digest hour, weekly weekday or None). The 02:00 and 01:00 hours are
# the ones DST changes skip or repeat in these zones.
PEOPLE = [
    ("ny_gap", "America/New_York", 2, None),
    ("ny_fold", "America/New_York", 1, None),
    ("ny", "America/New_York", 8, None),
    ("berlin_dst", "Europe/Berlin", 2, None),
    ("berlin", "Europe/Berlin", 8, None),
    ("kolkata", "Asia/Kolkata", 8, None),
    ("sydney_dst", "Australia/Sydney", 2, None),
    ("sydney", "Australia/Sydney", 9, None),
    ("weekly_ny", "America/New_York", 9, 6),  # Sundays, when the US changes
    ("weekly_sydney", "Australia/Sydney", 2, 6),
]
WINDOWS = {
    # start (UTC), days: each covers a spring-forward or a fall-back somewhere; the
    # long ones two Sundays (weekly digests) with a change on each.
    "us-spring": (utc(2026, 3, 6), 4),  # New York: 8 March
    "eu-spring-au-fall": (utc(2026, 3, 27), 10),  # Berlin: 29 March; Sydney: 5 April
    "au-spring": (utc(2026, 10, 2), 4),  # Sydney: 4 October
    "eu-fall-us-fall": (utc(2026, 10, 23), 10),  # Berlin: 25 October; New York: 1 November
}


def expected_periods(tz_name, hour, weekday, ticks, first_item):
    """An oracle independent of notify.scheduling.digests.periods: the local dates whose digest hour
    the wall clock crossed between two ticks after the first item arrived."""
    tz = zone(tz_name)
    dates = []
    for before, after in itertools.pairwise(ticks):
        if after <= first_item:
            continue
        wall_before = before.astimezone(tz).replace(tzinfo=None)
        wall_after = after.astimezone(tz).replace(tzinfo=None)
        target = datetime.combine(wall_after.date(), time(hour))
        if wall_before < target <= wall_after and (weekday is None or target.weekday() == weekday):
            dates.append(target.date())
    return dates


@pytest.mark.slow
@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_digests_across_dst_changes_are_never_skipped_nor_doubled(
    window, smtp_mailer, make_user, make_rule, category
):
    make_rule(name="shipped", channels=["email"])
    users = {}
    for name, tz, hour, weekday in PEOPLE:
        mode = "daily" if weekday is None else "weekly"
        users[name] = digest_user(
            make_user, [category], name, tz=tz, hour=hour, mode=mode, digest_weekday=weekday or 0
        )
    start, days = WINDOWS[window]
    ticks = [start + TICK * i for i in range(days * 24 * 4 + 1)]
    with time_machine.travel(start, tick=False) as clock:
        for number, now in enumerate(ticks):
            clock.move_to(now)
            build_and_send_due_digests()
            if number % 24 == 0:  # something new for everyone every 6 hours
                shipped(*users.values(), order_id=f"{window}-{number}")

    received = Counter(m.rcpt_tos[0] for m in smtp_mailer.messages)
    digests = defaultdict(list)
    for digest in Digest.objects.order_by("sent_at"):
        digests[digest.user_id].append(digest)
    for name, tz_name, hour, weekday in PEOPLE:
        user = users[name]
        sent = digests[user.pk]
        tz = zone(tz_name)
        expected = expected_periods(tz_name, hour, weekday, ticks, start)
        assert received[user.email] == len(sent), f"{name}: sent twice"
        assert all(d.status == Status.SENT for d in sent)
        if weekday is None:
            assert [d.period for d in sent] == [day.isoformat() for day in expected], name
        else:
            assert [d.period for d in sent] == [
                f"{day.isocalendar()[0]}-W{day.isocalendar()[1]:02d}" for day in expected
            ], name
        for digest in sent:
            # Sent at the first tick at which the local clock showed the digest hour.
            local = digest.sent_at.astimezone(tz).replace(tzinfo=None)
            local_before = (digest.sent_at - TICK).astimezone(tz).replace(tzinfo=None)
            target = datetime.combine(local.date(), time(hour))
            assert local_before < target <= local, (name, digest.period, digest.sent_at)
            if weekday is not None:
                assert local.weekday() == weekday
    # Every item went into exactly one digest (the last few wait for tomorrow's).
    assert not Delivery.objects.filter(status=Status.DIGEST, digest__isnull=False).exists()
    total = sum(d.item_count for batch in digests.values() for d in batch)
    assert Delivery.objects.filter(status=Status.SENT).count() == total


@pytest.mark.parametrize("batch", [2, 500])
def test_digests_go_out_in_batches_of_digest_batch_size(
    batch, settings, smtp_mailer, make_user, make_rule, category
):
    """``DIGEST_BATCH_SIZE`` digests are claimed and sent per batch (one channel
    session, shared reads): several small batches or one large one, every
    digest once either way."""
    settings.NOTIFY = {**settings.NOTIFY, "DIGEST_BATCH_SIZE": batch}
    make_rule(name="shipped", channels=["email"])
    users = [digest_user(make_user, [category], f"b{i}", hour=8) for i in range(5)]
    with time_machine.travel(utc(2026, 11, 20, 12), tick=False) as clock:
        shipped(*users)
        clock.move_to(utc(2026, 11, 21, 8, 5))
        stats = build_and_send_due_digests()
    assert stats.sent == 5
    assert sorted(m.rcpt_tos[0] for m in smtp_mailer.messages) == sorted(u.email for u in users)
    attempts = Digest.objects.values_list("attempts", flat=True)
    assert list(attempts) == [1] * 5
