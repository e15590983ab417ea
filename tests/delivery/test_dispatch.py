"""Dispatch: claims, outcomes and every attempt on the record, against the SMTP peer.

Broken templates fail one delivery and never the worker; transient errors end
``dead`` after the last attempt; a crashed worker's claim expires and is
claimed again; a stale claim writes nothing; preferences decide again at send
time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels.email import SESSION_CHECK_AFTER
from notify import trigger
from notify.delivery.inflight import close_pools
from notify.delivery.rendering import template_store
from notify.delivery.send import deliver
from notify.fanout.pipeline import process_event
from notify.models import (
    Category,
    ChannelPreference,
    Delivery,
    DeliveryAttempt,
    Event,
)
from notify.models.status import Status
from notify.outbox.rows import (
    Outcome,
    claim_due_deliveries,
    mark_in_flight,
    record_outcomes,
    retry_now,
)
from notify.runtime.worker import run_once, run_until_idle

GOOD = {
    "email.subject": "Notice for {{ recipient.first_name }}",
    "email.txt": "Hello {{ recipient.first_name }}.",
}
BROKEN = {
    "syntax": {**GOOD, "email.subject": "Notice {% if payload.order_id %} unterminated"},
    "undefined": {**GOOD, "email.txt": "Total: {{ payload.order.total }}"},
    "runtime": {**GOOD, "email.txt": "{{ 1 // payload.zero }}"},
}


@pytest.fixture
def template_dir(db, settings, tmp_path):
    directory = tmp_path / "templates"
    settings.NOTIFY = {
        **settings.NOTIFY,
        "TEMPLATE_DIRS": [str(directory), *settings.NOTIFY["TEMPLATE_DIRS"]],
    }
    template_store.refresh(force=True)
    yield directory
    template_store.refresh(force=True)


def write_message(directory: Path, name: str, parts: dict[str, str]) -> None:
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    for part, source in parts.items():
        (folder / part).write_text(source, encoding="utf-8")


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


def shipped(*recipients, **payload) -> Event:
    return trigger("order.shipped", {"order_id": "A1", **payload}, recipients=list(recipients))


def fan_out_now(event: Event) -> None:
    """Fan out at once and mark the event processed, as a worker would."""
    assert process_event(event.pk) is not None


def make_due() -> None:
    Delivery.objects.filter(status=Status.PENDING).update(next_attempt_at=timezone.now())


# -- broken templates ---------------------------------------------------------------------


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_broken_template_fails_its_delivery_and_the_worker_goes_on(
    broken, smtp_mailer, template_dir, make_user, make_rule, alice
):
    bob = make_user("bob", first_name="Bob")
    write_message(template_dir, "notice", BROKEN[broken])
    # Rules run by priority: the broken one first, so its deliveries come first too.
    make_rule(name="broken", message="notice", channels=["email"], priority=10)
    make_rule(name="fine", message="order_shipped", channels=["email", "inapp"])
    event = shipped(alice, bob, zero=0)

    run_until_idle()

    rows = Delivery.objects.filter(notification__event=event).select_related("notification__rule")
    by_rule = {(d.notification.rule.name, d.notification.user_id, d.channel): d for d in rows}
    for user in (alice, bob):
        failed = by_rule[("broken", user.pk, "email")]
        assert failed.status == Status.FAILED
        assert failed.error_code == "template"
        assert "notice/" in failed.error_message
        assert failed.attempts == 1
        [attempt] = failed.attempt_log.all()
        assert attempt.outcome == DeliveryAttempt.Outcome.PERMANENT
        assert attempt.error_code == "template"
        assert by_rule[("fine", user.pk, "email")].status == Status.SENT
        assert by_rule[("fine", user.pk, "inapp")].status == Status.SENT
    assert sorted(m.rcpt_tos[0] for m in smtp_mailer.messages) == [
        "alice@example.com",
        "bob@example.com",
    ]
    assert {m.subject for m in smtp_mailer.messages} == {"Your order A1 has shipped"}

    make_due()
    assert run_until_idle() == 0  # a template failure is permanent


# -- transient errors until the last attempt ---------------------------------------------


def test_transient_errors_until_max_attempts_end_dead(settings, smtp_mailer, make_rule, alice):
    settings.NOTIFY = {**settings.NOTIFY, "MAX_ATTEMPTS": 3}
    make_rule(channels=["email"])
    smtp_mailer.defer_next(3, 451)
    shipped(alice)

    statuses = []
    for _ in range(3):
        run_until_idle()
        statuses.append(Delivery.objects.get().status)
        make_due()

    assert statuses == [Status.PENDING, Status.PENDING, Status.DEAD]
    delivery = Delivery.objects.get()
    assert delivery.attempts == 3
    assert delivery.error_code == "451"
    attempts = list(delivery.attempt_log.all())
    assert [a.number for a in attempts] == [1, 2, 3]
    assert {a.outcome for a in attempts} == {DeliveryAttempt.Outcome.TRANSIENT}
    assert attempts[-1].retry_at is None
    assert all(a.retry_at is not None for a in attempts[:-1])
    assert smtp_mailer.messages == []

    Delivery.objects.update(next_attempt_at=timezone.now() - timedelta(days=1))
    assert run_until_idle() == 0  # dead stays dead...

    assert retry_now([delivery.pk]) == 1  # ...until ops retry it from admin
    run_until_idle()
    delivery.refresh_from_db()
    assert delivery.status == Status.SENT
    assert len(smtp_mailer.messages) == 1


# -- one provider session per batch ------------------------------------------------------


def one_in_flight(settings, alias: str) -> None:
    channels = settings.NOTIFY["CHANNELS"]
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**channels, alias: {**channels[alias], "CONCURRENCY": 1}},
    }


def test_a_batch_of_emails_shares_one_smtp_session(settings, smtp_mailer, make_rule, make_user):
    """With one send in flight (``CONCURRENCY`` 1) a batch uses one session."""
    one_in_flight(settings, "email")
    users = [make_user(f"reader{i}") for i in range(6)]
    make_rule(channels=["email"])
    shipped(*users)

    run_until_idle()

    assert Delivery.objects.filter(status=Status.SENT).count() == 6
    assert sorted(m.rcpt_tos[0] for m in smtp_mailer.messages) == sorted(u.email for u in users)
    assert smtp_mailer.sessions == 1


def test_sends_in_flight_reuse_their_smtp_sessions(settings, smtp_mailer, make_rule, make_user):
    """At the defaults a batch keeps up to 8 sessions open and reuses them."""
    settings.NOTIFY = {**settings.NOTIFY, "WORKER_BATCH_SIZE": 40, "SENDS_IN_FLIGHT": 64}
    users = [make_user(f"reader{i}") for i in range(40)]
    make_rule(channels=["email"])
    shipped(*users)

    run_until_idle()

    assert Delivery.objects.filter(status=Status.SENT).count() == 40
    assert sorted(m.rcpt_tos[0] for m in smtp_mailer.messages) == sorted(u.email for u in users)
    assert 1 <= smtp_mailer.sessions <= 8


def test_one_write_transaction_per_delivery_at_one_in_flight(
    settings, smtp_mailer, make_rule, make_user
):
    """Each tick of the send loop writes the outcome of the send that returned
    and the mark of the next one in one transaction (notify.delivery.inflight):
    five deliveries sent one at a time cost six write transactions (the first
    mark alone, then outcome + next mark, then the last outcome), not ten."""
    one_in_flight(settings, "email")
    users = [make_user(f"reader{i}") for i in range(5)]
    make_rule(channels=["email"])
    fan_out_now(shipped(*users))
    ids, token = claim_due_deliveries(limit=10, ttl=60)

    with CaptureQueriesContext(connection) as queries:
        stats = deliver(ids, token)

    assert stats.sent == 5
    blocks: list[list[str]] = []  # the statements of each transaction (a savepoint here)
    depth = 0
    for sql in (q["sql"] for q in queries.captured_queries):
        if sql.startswith("SAVEPOINT"):
            depth += 1
            if depth == 1:
                blocks.append([])
        elif sql.startswith("RELEASE SAVEPOINT"):
            depth -= 1
        elif depth:
            blocks[-1].append(sql)
    writes = [b for b in blocks if any(s.startswith(("UPDATE", "INSERT")) for s in b)]
    marks = [b for b in writes if any("SET sending_since" in s for s in b)]
    outcomes = [b for b in writes if any("SET status" in s for s in b)]
    assert (len(writes), len(marks), len(outcomes)) == (6, 5, 5)
    assert marks[1:] == outcomes[:-1]  # each outcome written with the next mark


def test_a_worker_thread_keeps_its_smtp_session_across_batches(
    settings, smtp_mailer, make_rule, make_user
):
    """Batch after batch, one worker thread sends through the same session."""
    one_in_flight(settings, "email")
    make_rule(channels=["email"])
    for i in range(3):
        shipped(make_user(f"reader{i}"))
        run_once()
    close_pools()

    assert Delivery.objects.filter(status=Status.SENT).count() == 3
    assert smtp_mailer.sessions == 1


def test_a_kept_session_the_server_dropped_is_opened_again(
    settings, smtp_mailer, make_rule, make_user
):
    """The server drops the session a worker thread keeps (a restart, an idle
    time-out): the next message, checked with a NOOP after the session sat idle,
    goes out on a new session at its first attempt, with no retry."""
    one_in_flight(settings, "email")
    make_rule(channels=["email"])
    shipped(make_user("reader0"))
    run_once()  # the session stays open in this thread
    smtp_mailer.stop()  # closes every session
    smtp_mailer.start()
    time.sleep(SESSION_CHECK_AFTER + 0.2)
    shipped(make_user("reader1"))
    run_once()
    close_pools()

    deliveries = list(Delivery.objects.order_by("pk"))
    assert [d.status for d in deliveries] == [Status.SENT, Status.SENT]
    for d in deliveries:
        assert [a.outcome for a in d.attempt_log.all()] == [DeliveryAttempt.Outcome.SENT]
    assert len(smtp_mailer.messages) == 2
    assert smtp_mailer.sessions == 2


def test_a_rejected_recipient_does_not_spoil_the_batch(smtp_mailer, make_rule, make_user):
    users = [make_user(f"reader{i}") for i in range(4)]
    smtp_mailer.reject(users[1].email, 550)
    smtp_mailer.defer_next(1, 451)  # the first message of the batch is deferred
    make_rule(channels=["email"])
    shipped(*users)

    run_until_idle()

    status = {
        d.notification.user.username: (d.status, d.error_code)
        for d in Delivery.objects.select_related("notification__user")
    }
    assert status == {
        "reader0": (Status.PENDING, "451"),
        "reader1": (Status.FAILED, "550"),
        "reader2": (Status.SENT, ""),
        "reader3": (Status.SENT, ""),
    }


def test_refusals_in_a_batch_keep_the_smtp_session(settings, smtp_mailer, make_rule, make_user):
    one_in_flight(settings, "email")
    users = [make_user(f"reader{i}") for i in range(4)]
    smtp_mailer.reject(users[1].email, 550)
    smtp_mailer.defer_next(1, 451)
    make_rule(channels=["email"])
    shipped(*users)

    run_until_idle()

    assert len(smtp_mailer.messages) == 2
    assert smtp_mailer.sessions == 1


# -- claims ----------------------------------------------------------------------------


@pytest.fixture
def fanned_out(smtp_mailer, make_rule, alice):
    """One email delivery for Alice, written by fan-out, not yet claimed."""
    make_rule(channels=["email"])
    fan_out_now(shipped(alice))
    return Delivery.objects.get()


def test_expired_claim_is_claimed_again_and_sent(smtp_mailer, fanned_out):
    ids, token = claim_due_deliveries(limit=10, ttl=60)
    assert ids == [fanned_out.pk]
    mark_in_flight(fanned_out.pk, token)  # its send started
    # The worker holding the claim is alive: nobody else takes it.
    assert run_until_idle() == 0
    # It died: once the claim expires, another worker takes over.
    Delivery.objects.filter(pk=fanned_out.pk).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )

    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.SENT
    assert delivery.attempts == 2
    assert delivery.claimed_until is None
    # The loss is on record (the first claim was in flight when its worker died).
    assert [(a.number, a.outcome) for a in delivery.attempt_log.order_by("number")] == [
        (1, DeliveryAttempt.Outcome.LOST),
        (2, DeliveryAttempt.Outcome.SENT),
    ]
    assert delivery.hold_reason == ""  # sent alone once, then an ordinary delivery again
    assert len(smtp_mailer.messages) == 1


def test_outcome_is_not_written_when_the_claim_is_no_longer_ours(smtp_mailer, fanned_out):
    from notify.delivery.send import deliver

    ids, stale = claim_due_deliveries(limit=10, ttl=60)
    mark_in_flight(fanned_out.pk, stale)
    stale = timezone.now() - timedelta(seconds=1)
    Delivery.objects.filter(pk__in=ids).update(claimed_until=stale)
    ids_again, current = claim_due_deliveries(limit=10, ttl=60)
    assert ids_again == ids and current != stale

    now = timezone.now()
    outcome = Outcome(
        delivery_id=fanned_out.pk,
        status=Status.SENT,
        attempt=1,
        started_at=now,
        finished_at=now,
        provider="smtp",
        message_id="<stale@example.com>",
    )
    assert record_outcomes([outcome], stale) == 0
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.claimed_until) == (Status.SENDING, current)
    assert delivery.provider_message_id == ""
    assert list(DeliveryAttempt.objects.values_list("outcome", flat=True)) == [
        DeliveryAttempt.Outcome.LOST
    ]

    # The stale worker's batch sends nothing; the current claim's batch sends once.
    assert deliver(ids, stale).recorded == 0
    assert smtp_mailer.messages == []
    stats = deliver(ids_again, current)
    assert (stats.sent, stats.recorded) == (1, 1)
    assert len(smtp_mailer.messages) == 1
    assert Delivery.objects.get().status == Status.SENT


# -- preferences, again ----------------------------------------------------------------------


def opt_out_of_email(user, category):
    ChannelPreference.objects.create(user=user, category=category, channel="email", enabled=False)


def deactivate(user, category):
    user.is_active = False
    user.save()


def drop_address(user, category):
    user.email = ""
    user.save()


@pytest.mark.parametrize(
    ("change", "email_reason", "inapp_status"),
    [
        (opt_out_of_email, "opted_out", Status.SENT),
        (deactivate, "inactive_user", Status.SKIPPED),
        (drop_address, "no_address", Status.SENT),
    ],
    ids=["opted-out", "deactivated", "address-removed"],
)
def test_preferences_are_checked_again_at_send_time(
    change, email_reason, inapp_status, smtp_mailer, make_rule, alice, category
):
    make_rule(channels=["email", "inapp"])
    event = shipped(alice)
    fan_out_now(event)
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.PENDING}

    change(alice, category)
    run_until_idle()

    email = Delivery.objects.get(channel="email")
    assert email.status == Status.SKIPPED
    assert email.skip_reason == email_reason
    [attempt] = email.attempt_log.all()
    assert attempt.outcome == DeliveryAttempt.Outcome.SKIPPED
    assert attempt.sent == {}
    assert smtp_mailer.messages == []
    assert Delivery.objects.get(channel="inapp").status == inapp_status


def test_critical_category_at_send_time_ignores_a_late_opt_out(
    smtp_mailer, make_rule, alice, category
):
    security = Category.objects.create(key="security", name="Security", critical=True)
    make_rule(category=security, channels=["email"])
    fan_out_now(shipped(alice))
    opt_out_of_email(alice, security)

    run_until_idle()

    assert Delivery.objects.get().status == Status.SENT
    assert len(smtp_mailer.messages) == 1


def test_channel_removed_from_config_fails_with_a_config_error(smtp_mailer, make_rule, alice):
    make_rule(channels=["email"])
    fan_out_now(shipped(alice))
    Delivery.objects.update(channel="pager")

    run_until_idle()

    delivery = Delivery.objects.get()
    assert delivery.status == Status.FAILED
    assert delivery.error_code == "config"
    assert "pager" in delivery.error_message
