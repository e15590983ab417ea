"""One send path: a digest's items get the attempts a single send records.

The same rule sends to one user at once and to another in a daily digest,
through the same SMTP peer; for a success, a transient error and a permanent
error, the attempt on each item of the digest must carry what the single
delivery's attempt carries (number, provider, outcome, error code and message,
retry time, the message sent, timings), the digest's items pointing at it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from notify import trigger
from notify.fanout.pipeline import process_event
from notify.models import CategoryPreference, Delivery, DeliveryAttempt, Digest, UserSettings
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from notify.scheduling.digests.send import build_and_send_due_digests

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)
DIGEST_HOUR = datetime(2026, 11, 21, 8, tzinfo=UTC)


def comparable(attempt: DeliveryAttempt) -> dict:
    """The fields of an attempt, with the recipient's address as ``<to>``."""
    to = attempt.sent.get("to", "")
    return {
        "number": attempt.number,
        "provider": attempt.provider,
        "outcome": attempt.outcome,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message.replace(to, "<to>") if to else "",
        "retries": attempt.retry_at is not None,
        "sent": sorted(set(attempt.sent) - {"digest"}),
        "response": sorted(attempt.response),
    }


@pytest.mark.parametrize(
    ("case", "single_status", "item_status", "outcome"),
    [
        ("sent", Status.SENT, Status.SENT, DeliveryAttempt.Outcome.SENT),
        ("transient", Status.PENDING, Status.DIGEST, DeliveryAttempt.Outcome.TRANSIENT),
        ("permanent", Status.FAILED, Status.FAILED, DeliveryAttempt.Outcome.PERMANENT),
    ],
)
def test_a_digest_send_records_attempts_exactly_like_a_single_send(
    case, single_status, item_status, outcome, smtp_mailer, make_user, make_rule, category
):
    make_rule(channels=["email"])
    sam = make_user("sam", first_name="Sam")  # hears at once
    dora = make_user("dora", first_name="Dora")  # hears in a daily digest
    UserSettings.objects.create(user=dora, timezone="UTC", digest_hour=8)
    CategoryPreference.objects.create(user=dora, category=category, mode="daily")
    if case == "permanent":
        smtp_mailer.reject(sam.email)
        smtp_mailer.reject(dora.email)
    with time_machine.travel(T0, tick=False) as clock:
        process_event(trigger("order.shipped", {"order_id": "A1"}, recipients=[sam, dora]).pk)
        clock.move_to(DIGEST_HOUR)
    with time_machine.travel(DIGEST_HOUR, tick=True):  # time moves: timings are real
        if case == "transient":
            smtp_mailer.defer_next(2)
        run_until_idle()
        stats = build_and_send_due_digests()
    assert stats.built == 1

    single = Delivery.objects.get(notification__user=sam)
    item = Delivery.objects.get(notification__user=dora)
    digest = Digest.objects.get()
    assert (single.status, item.status) == (single_status, item_status)
    assert item.digest_id == digest.pk
    [single_attempt] = single.attempt_log.all()
    [item_attempt] = item.attempt_log.all()

    assert comparable(item_attempt) == comparable(single_attempt)
    assert (item_attempt.number, item_attempt.outcome) == (1, outcome)
    assert item_attempt.provider == single_attempt.provider == "smtp"
    # What was sent: the digest's message, as the single's attempt keeps its own.
    assert item_attempt.sent["digest"] == digest.pk
    assert {k: v for k, v in item_attempt.sent.items() if k != "digest"} == digest.sent
    assert item_attempt.sent["to"] == dora.email and single_attempt.sent["to"] == sam.email
    assert item_attempt.sent["subject"] == "Your daily digest: 1 new notification"
    assert single_attempt.sent["subject"] == "Your order A1 has shipped"
    # The delivery rows say the same as their attempts.
    assert (item.error_code, item.provider) == (single.error_code, single.provider)
    for attempt in (single_attempt, item_attempt):
        assert DIGEST_HOUR <= attempt.started_at <= attempt.finished_at
        assert attempt.finished_at - attempt.started_at < timedelta(seconds=30)
        if case == "transient":
            assert attempt.error_code == "451" and attempt.retry_at > attempt.finished_at
        elif case == "permanent":
            assert attempt.error_code == "550" and attempt.retry_at is None
        else:
            assert attempt.error_code == "" and attempt.error_message == ""
    if case == "sent":
        assert item.provider_message_id == digest.provider_message_id != ""
        assert len(smtp_mailer.messages) == 2
