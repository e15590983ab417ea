"""Digests exactly once in our books: each recorded as it is sent, a claim the
sender keeps alive, a channel configuration error that loses nothing already
sent, and a unique ``X-Notify-Delivery`` per digest (receivers dedupe by it).

The kill -9 of a real leader mid-digest is ``tests/scheduling/test_digest_crash.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from django.utils import timezone

from channels.email import EmailChannel
from notify import conf, trigger
from notify.fanout.pipeline import process_event
from notify.models import CategoryPreference, ContactPoint, Delivery, Digest, UserSettings
from notify.models.status import Status
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.send import build_and_send_due_digests, claim_due_digests

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
DIGEST_HOUR = datetime(2026, 11, 21, 8, tzinfo=UTC)


def digest_users(make_user, category, count: int, phone: bool = False):
    users = []
    for n in range(count):
        user = make_user(f"d{n}")
        UserSettings.objects.create(user=user, timezone="UTC", digest_hour=8)
        CategoryPreference.objects.create(user=user, category=category, mode="daily")
        if phone:
            ContactPoint.objects.create(
                user=user,
                kind=ContactPoint.Kind.PHONE,
                address=f"+1500555{n:04d}",
                verified_at=timezone.now(),
            )
        users.append(user)
    with time_machine.travel(T0, tick=False):
        for order in ("A1", "A2"):
            event = trigger("order.shipped", {"order_id": order}, recipients=users)
            process_event(event.pk)
    return users


def test_every_digest_carries_its_own_delivery_id(smtp_mailer, make_user, make_rule, category):
    make_rule(channels=["email"])
    digest_users(make_user, category, 3)
    with time_machine.travel(DIGEST_HOUR, tick=True):
        assert build_and_send_due_digests().sent == 3
    ids = {m.headers["X-Notify-Delivery"] for m in smtp_mailer.messages}
    assert ids == {f"digest-{pk}" for pk in Digest.objects.values_list("pk", flat=True)}


def test_a_configuration_error_keeps_what_was_sent(twilio_sms, make_user, make_rule, category):
    """Twilio answers 401 after the first digest: that digest stays sent, the
    rest of the batch fails with the reason at once (no claim left to expire and
    no re-send), and the scheduler's call does not raise."""
    make_rule(channels=["sms"])
    digest_users(make_user, category, 3, phone=True)

    def revoke_token(message):
        twilio_sms.auth_token = "revoked"  # every later request: 401, code 20003

    twilio_sms.on_accept = revoke_token
    with time_machine.travel(DIGEST_HOUR, tick=True):
        stats = build_and_send_due_digests()
        assert (stats.sent, stats.failed) == (1, 2)
        assert build_and_send_due_digests().sent == 0
    assert len(twilio_sms.messages) == 1
    statuses = sorted(Digest.objects.values_list("status", flat=True))
    assert statuses == [Status.FAILED, Status.FAILED, Status.SENT]
    failed = Digest.objects.filter(status=Status.FAILED)
    assert all("authentication failed" in d.error_message for d in failed)
    items = Delivery.objects.filter(digest__status=Status.FAILED)
    assert {(i.status, i.error_code) for i in items} == {(Status.FAILED, "config")}
    sent_items = Delivery.objects.filter(digest__status=Status.SENT)
    assert {i.status for i in sent_items} == {Status.SENT}


def test_a_live_senders_claim_never_expires(
    smtp_mailer, make_user, make_rule, category, monkeypatch
):
    """At the default claim time, each send taking 70 % of it: while the batch
    is in flight another scheduler finds nothing to claim, and each digest is
    sent once."""
    make_rule(channels=["email"])
    digest_users(make_user, category, 4)
    ttl = conf.SETTINGS["CLAIM_TTL"].default
    assert conf.get("CLAIM_TTL") == ttl
    rivals: list[dict] = []
    real_send = EmailChannel.send
    with time_machine.travel(DIGEST_HOUR, tick=False) as clock:

        def slow_send(self, message):
            result = real_send(self, message)
            clock.shift(timedelta(seconds=ttl * 0.7))
            rival, _ = claim_due_digests(timezone.now(), 50, ttl)
            rivals.append(rival)
            return result

        monkeypatch.setattr(EmailChannel, "send", slow_send)
        build_due_digests(timezone.now())
        assert build_and_send_due_digests().sent == 4
    assert rivals == [{}, {}, {}, {}]
    assert len(smtp_mailer.messages) == 4
    assert list(Digest.objects.values_list("attempts", flat=True)) == [1, 1, 1, 1]


def test_each_digest_is_recorded_as_it_is_sent(
    smtp_mailer, make_user, make_rule, category, monkeypatch
):
    """The books as each digest goes out: those before it are already recorded
    sent (a crash then would re-send only the one in flight)."""
    make_rule(channels=["email"])
    digest_users(make_user, category, 4)
    seen: list[int] = []
    real_send = EmailChannel.send

    def send(self, message):
        seen.append(Digest.objects.filter(status=Status.SENT).count())
        return real_send(self, message)

    monkeypatch.setattr(EmailChannel, "send", send)
    with time_machine.travel(DIGEST_HOUR, tick=True):
        assert build_and_send_due_digests().sent == 4
    assert seen == [0, 1, 2, 3]
