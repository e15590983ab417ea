"""Digests through the shared send loop (``notify.delivery.inflight``, issue 14).

With ``SENDS_IN_FLIGHT`` raised, a leader has up to the channel's concurrency
of digests in flight at once (email over SMTP: 8), each on an SMTP session of
its own; counted at the SMTP peer: every digest arrives once, under its own
``X-Notify-Delivery``, and is recorded once (its row, its items, one attempt
per item), whatever order the answers come back in; a refusal (5xx) or a
deferral (4xx) is recorded on the digest it answered. At the defaults one
digest is in flight at a time.

The kill -9 of a leader mid-batch is ``tests/scheduling/test_digest_crash.py``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from notify import conf
from notify.models import Delivery, DeliveryAttempt, Digest
from notify.models.status import Status
from notify.scheduling.digests.build import build_due_digests
from notify.scheduling.digests.record import DigestOutcome, DigestStats, record_digests
from notify.scheduling.digests.send import build_and_send_due_digests, claim_due_digests
from tests.scheduling.test_digest_exactly_once import DIGEST_HOUR, digest_users

USERS = 12
LATENCY = 0.2  # the peer's answer to each message's DATA


@pytest.fixture
def many_in_flight(settings):
    settings.NOTIFY = {**settings.NOTIFY, "SENDS_IN_FLIGHT": 64}


def received(peer) -> Counter[str]:
    return Counter(m.headers["X-Notify-Delivery"] for m in peer.messages)


def assert_recorded_once(statuses: dict[str, str]) -> None:
    """Each digest's row and items on the books once: one attempt an item."""
    rows = {f"digest-{pk}": status for pk, status in Digest.objects.values_list("pk", "status")}
    assert rows == statuses
    assert set(Digest.objects.values_list("attempts", flat=True)) == {1}
    per_item = Counter(DeliveryAttempt.objects.values_list("delivery_id", flat=True))
    items = set(Delivery.objects.filter(digest__isnull=False).values_list("pk", flat=True))
    assert set(per_item) == items and set(per_item.values()) == {1}


def test_several_digests_are_in_flight_at_once(
    smtp_mailer, make_user, make_rule, category, many_in_flight
):
    make_rule(channels=["email"])
    digest_users(make_user, category, USERS)
    smtp_mailer.latency = LATENCY
    with time_machine.travel(DIGEST_HOUR, tick=True):
        stats = build_and_send_due_digests()
    assert stats.sent == USERS
    assert smtp_mailer.peak_in_flight == 8  # email's own limit (CONCURRENCY), not 1
    copies = received(smtp_mailer)
    assert set(copies.values()) == {1} and len(copies) == USERS
    assert_recorded_once(dict.fromkeys(copies, Status.SENT))
    for digest in Digest.objects.all():
        assert digest.item_count == 2 and digest.sent["headers"]["X-Notify-Digest"] == str(
            digest.pk
        )
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.SENT}


def test_each_refusal_is_recorded_on_its_own_digest(
    smtp_mailer, make_user, make_rule, category, many_in_flight
):
    """Answers come back in any order: a 550 fails its digest (and its items),
    a 450 puts its digest back for a retry (its items still in it), and the
    digests in flight beside them are sent."""
    make_rule(channels=["email"])
    users = digest_users(make_user, category, USERS)
    refused, deferred = users[3], users[7]
    smtp_mailer.reject(refused.email, 550)
    smtp_mailer.reject(deferred.email, 450)
    smtp_mailer.latency = LATENCY
    with time_machine.travel(DIGEST_HOUR, tick=True):
        stats = build_and_send_due_digests()
    assert (stats.sent, stats.failed, stats.retried) == (USERS - 2, 1, 1)
    assert smtp_mailer.peak_in_flight > 1
    by_user = {d.user_id: d for d in Digest.objects.all()}
    assert by_user[refused.pk].status == Status.FAILED
    assert "550" in by_user[refused.pk].error_message
    assert by_user[deferred.pk].status == Status.PENDING
    assert "450" in by_user[deferred.pk].error_message
    items = Delivery.objects.filter(digest__isnull=False)
    assert {i.status for i in items.filter(digest__user=refused)} == {Status.FAILED}
    assert {i.status for i in items.filter(digest__user=deferred)} == {Status.DIGEST}
    sent = items.exclude(digest__user__in=[refused, deferred])
    assert {i.status for i in sent} == {Status.SENT}
    statuses = {f"digest-{d.pk}": d.status for d in by_user.values()}
    assert_recorded_once(statuses)
    outcomes = dict(
        DeliveryAttempt.objects.filter(delivery__digest__user__in=[refused, deferred])
        .values_list("delivery__digest__user_id", "outcome")
        .distinct()
    )
    assert outcomes == {
        refused.pk: DeliveryAttempt.Outcome.PERMANENT,
        deferred.pk: DeliveryAttempt.Outcome.TRANSIENT,
    }
    assert set(received(smtp_mailer).values()) == {1}


def test_one_digest_in_flight_at_the_defaults(smtp_mailer, make_user, make_rule, category):
    """The twin at the defaults (``SENDS_IN_FLIGHT`` 1)."""
    assert conf.get("SENDS_IN_FLIGHT") == 1
    make_rule(channels=["email"])
    digest_users(make_user, category, 4)
    smtp_mailer.latency = 0.05
    with time_machine.travel(DIGEST_HOUR, tick=True):
        assert build_and_send_due_digests().sent == 4
    assert smtp_mailer.peak_in_flight == 1
    copies = received(smtp_mailer)
    assert_recorded_once(dict.fromkeys(copies, Status.SENT))


@pytest.mark.parametrize("count", [1, 3])  # a tick at the defaults; a tick of several
def test_a_tick_leaves_a_row_another_leader_claimed_alone(make_user, make_rule, category, count):
    make_rule(channels=["email"])
    digest_users(make_user, category, count)
    with time_machine.travel(DIGEST_HOUR, tick=False):
        build_due_digests(timezone.now())
        claimed, token = claim_due_digests(timezone.now(), 50, conf.get("CLAIM_TTL"))
        digests = list(Digest.objects.order_by("pk"))
        stolen = digests[-1]
        other = token + timedelta(seconds=5)
        Digest.objects.filter(pk=stolen.pk).update(due_at=other)  # claimed again elsewhere
        outcomes = [DigestOutcome(d, Status.SKIPPED, note="no items") for d in digests]
        stats = DigestStats()
        assert record_digests(outcomes, token, claimed, stats) == [d.pk for d in digests[:-1]]
    assert stats.skipped == count - 1
    stolen.refresh_from_db()
    assert (stolen.status, stolen.due_at, stolen.error_message) == (Status.SENDING, other, "")
    for digest in digests[:-1]:
        digest.refresh_from_db()
        assert (digest.status, digest.error_message) == (Status.SKIPPED, "no items")
