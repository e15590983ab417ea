"""Deliveries under real provider behaviour: latency, a configuration error
mid-batch, a message that kills its worker. Counted at the local peers.

* 200 deliveries to an HTTP receiver answering in 3 s, at the default settings
  (claim 120 s, batches of ``WORKER_BATCH_SIZE``, 10 s time-out), sent by an
  in-process pool of 20 threads as a deployment facing a slow provider would
  run: 0 duplicates, 0 dead, one attempt each (about 35 s: the receiver's
  latency, not notify, sets the time);
* Twilio answering 401 after 4 messages of a batch: the 4 are sent and
  recorded, the 5th fails with the error, the rest fail untried with the
  reason, an ERROR names them, and nothing is sent again;
* a message that kills its process (SIGKILL in the middle of its send), in the
  embedded pool (``notify worker``) and under a real Celery worker: its batch
  mates are sent exactly once, it ends dead ("worker lost") after
  ``MAX_WORKER_LOSSES``, and at the defaults that is within 10 minutes
  (a controlled clock, and the worker processes with short claims).
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

import notify
from notify import celery as notify_celery
from notify import conf
from notify.fanout.pipeline import process_event
from notify.models import Category, ContactPoint, Delivery, DeliveryAttempt, Event
from notify.models.status import Status
from notify.observability.queries import Period, failure_reasons
from notify.outbox.rows import (
    SUSPECT,
    Outcome,
    claim_due_deliveries,
    claim_events,
    mark_in_flight,
    record_outcomes,
)
from notify.runtime import relay
from notify.runtime.handoff import get_dispatcher
from notify.runtime.worker import WorkerPool, run_until_idle
from rules.models import Rule
from tests.peers.counting_provider import CountingProvider
from tests.peers.http import running
from tests.scaleout import (
    RABBITMQ_URL,
    celery_worker,
    drop_broker_queue,
    final_count,
    machine_to_ourselves,
    notify_worker,
    our_books,
    process_env,
    reachable,
    seed_group,
    unique_queue,
    wait_until,
)

Attempt = DeliveryAttempt.Outcome


def group_rule(group: str, event_type: str = "order.shipped", channel: str = "counting") -> Rule:
    category, _ = Category.objects.get_or_create(key="orders", defaults={"name": "Orders"})
    return Rule.objects.create(
        name=f"{group}-{event_type}",
        event_type=event_type,
        category=category,
        recipients=[f"group:{group}"],
        channels=[channel],
        message="order_shipped",
    )


def counting_channel(url: str, **options) -> dict:
    return {
        "BACKEND": "tests.peers.counting_provider.CountingChannel",
        "OPTIONS": {"URL": url, **options},
    }


@contextlib.contextmanager
def worker_pool(threads: int):
    pool = WorkerPool(threads=threads)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop(timeout=60)


def one_attempt_each(total: int) -> None:
    """Our books: every delivery sent, with exactly one attempt on record (its send)."""
    books = our_books()
    assert books["statuses"] == {Status.SENT: total}, books
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}
    attempts = list(DeliveryAttempt.objects.values_list("delivery_id", "number", "outcome"))
    assert len(attempts) == total
    assert {(number, outcome) for _, number, outcome in attempts} == {(1, Attempt.SENT)}
    assert len({delivery for delivery, _, _ in attempts}) == total


# -- a receiver answering in 3 s, default settings --------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_200_deliveries_to_a_receiver_answering_in_3_s_at_the_defaults(settings):
    total = 200
    with machine_to_ourselves():
        receiver = CountingProvider()
        receiver.latency = 3.0  # under the channel's default time-out (10 s)
        receiver.start()
        try:
            settings.NOTIFY = {
                **settings.NOTIFY,
                # No TIMEOUT: the channel's default.
                "CHANNELS": {
                    **settings.NOTIFY["CHANNELS"],
                    "counting": counting_channel(receiver.url),
                },
            }
            for key in ("CLAIM_TTL", "WORKER_BATCH_SIZE", "WORKER_BATCH_SECONDS", "MAX_ATTEMPTS"):
                assert key not in settings.NOTIFY  # the defaults
            seed_group("crew", total)
            group_rule("crew")
            started = time.monotonic()
            with worker_pool(20):
                notify.trigger("order.shipped", {"order_id": "SLOW"})
                done = wait_until(lambda: final_count() == total, 100, interval=0.5)
            took = time.monotonic() - started
        finally:
            receiver.stop()
    assert done, our_books()
    accepted = receiver.accepted()
    assert len(accepted) == total
    assert set(accepted.values()) == {1}, sorted(n for n in accepted.values() if n > 1)
    one_attempt_each(total)
    print(f"{total} deliveries at 3 s each through 20 threads in {took:.0f} s")


# -- a configuration error mid-batch ------------------------------------------------------


@pytest.mark.django_db
def test_twilio_refusing_the_credentials_mid_batch(twilio_sms, make_user, make_rule, caplog):
    users = []
    for i in range(10):
        user = make_user(f"texter{i}")
        ContactPoint.objects.create(
            user=user, kind="phone", address=f"+1415555{i:04d}", verified_at=timezone.now()
        )
        users.append(user)
    make_rule(channels=["sms"])
    twilio_sms.revoke_after(4)  # the auth token is rotated after the 4th message
    notify.trigger("order.shipped", {"order_id": "A1"}, recipients=users)

    with caplog.at_level(logging.ERROR, logger="notify.delivery.send"):
        run_until_idle()

    # The receiver: four messages, each once; one request refused; nothing more.
    assert sorted(m.to for m in twilio_sms.messages) == [f"+1415555{i:04d}" for i in range(4)]
    assert len(twilio_sms.requests) == 5
    deliveries = list(Delivery.objects.order_by("pk"))
    sent, refused, untried = deliveries[:4], deliveries[4], deliveries[5:]
    assert [d.status for d in sent] == [Status.SENT] * 4
    for d in sent:
        assert [(a.number, a.outcome) for a in d.attempt_log.all()] == [(1, Attempt.SENT)]
    # The one that met the 401: failed, with Twilio's answer on record.
    assert (refused.status, refused.error_code) == (Status.FAILED, "config")
    [attempt] = refused.attempt_log.all()
    assert (attempt.outcome, attempt.error_code) == (Attempt.PERMANENT, "config")
    assert "sms" in attempt.error_message
    # The rest: failed untried, saying why; no attempt used, none on record.
    for d in untried:
        assert (d.status, d.error_code, d.attempts) == (Status.FAILED, "config", 0)
        assert "not sent" in d.error_message and "sms" in d.error_message
        assert not d.attempt_log.exists()
    assert not Delivery.objects.filter(error_code="worker_lost").exists()
    # Visible: one ERROR naming the channel and every delivery concerned.
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "'sms'" in message and str(refused.pk) in message
    assert all(str(d.pk) in message for d in untried)
    # And on the delivery-health dashboard's failure reasons.
    [reason] = failure_reasons(Period.last("24h"))
    assert (reason.channel, reason.status, reason.error_code, reason.count) == (
        "sms",
        Status.FAILED,
        "config",
        6,
    )
    # Nothing is claimed or sent again, even once claims would have expired.
    assert run_until_idle() == 0
    assert len(twilio_sms.requests) == 5


# -- a message that kills its worker: the defaults, on a controlled clock -------------------


@pytest.fixture
def counting_provider():
    yield from running(CountingProvider)


@pytest.fixture
def counting(settings, counting_provider):
    """The ``counting`` channel in this process (fan-out checks the rule's channel)."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {
            **settings.NOTIFY["CHANNELS"],
            "counting": counting_channel(counting_provider.url),
        },
    }
    return counting_provider


@pytest.fixture
def mates_and_poison(counting):
    """Ten deliveries on ``counting``: four mates, the poison, five mates, in
    the order a batch sends them."""
    _, poison_event, _ = poison_and_mates()
    run_fan_out_only()
    poison = Delivery.objects.get(notification__event=poison_event)
    return poison, list(Delivery.objects.exclude(pk=poison.pk).order_by("pk"))


def sent_outcome(pk: int, attempt: int, at) -> Outcome:
    return Outcome(pk, Status.SENT, attempt, at, at, provider="counting", message_id=f"m{pk}")


@pytest.mark.django_db
def test_a_poison_message_is_dead_within_10_minutes_at_the_defaults(mates_and_poison):
    """The claim sequence a worker fleet goes through when the poison kills
    every worker that sends it, at the default CLAIM_TTL, MAX_WORKER_LOSSES and
    WORKER_BATCH_SIZE, on a clock the test moves: a dead worker's claim expires
    CLAIM_TTL after its last heartbeat at the latest, the next claim takes the
    poison alone, and after MAX_WORKER_LOSSES losses it is dead."""
    poison, mates = mates_and_poison
    ttl = conf.get("CLAIM_TTL")
    t0 = timezone.now()
    # A worker claims the batch, sends and records the four before the poison,
    # marks the poison in flight and dies on it.
    ids, token = claim_due_deliveries(conf.get("WORKER_BATCH_SIZE"), ttl, now=t0)
    assert sorted(ids) == sorted([poison.pk, *(m.pk for m in mates)])
    for mate in mates[:4]:
        assert record_outcomes([sent_outcome(mate.pk, 1, t0)], token) == 1
    mark_in_flight(poison.pk, token)
    now, losses = t0, 0
    while True:
        # Nobody takes anything while the claim lives (the heartbeat would
        # have kept it for a live worker).
        assert claim_due_deliveries(10, ttl, now=now + timedelta(seconds=ttl - 1))[0] == []
        now += timedelta(seconds=ttl + 1)  # a worker polls just after it expired
        ids, token = claim_due_deliveries(conf.get("WORKER_BATCH_SIZE"), ttl, now=now)
        losses += 1
        poison.refresh_from_db()
        if poison.status == Status.DEAD:
            break
        assert ids == [poison.pk]  # alone
        assert poison.hold_reason == SUSPECT
        if losses == 1:
            # Its five untried mates went back without using an attempt...
            assert set(
                Delivery.objects.filter(pk__in=[m.pk for m in mates[4:]]).values_list(
                    "status", "attempts"
                )
            ) == {(Status.PENDING, 0)}
            # ... and are claimed (without the poison) by the next batch.
            later, later_token = claim_due_deliveries(10, ttl, now=now)
            assert sorted(later) == [m.pk for m in mates[4:]]
            for pk in later:
                record_outcomes([sent_outcome(pk, 1, now)], later_token)
        mark_in_flight(poison.pk, token)  # ... and it kills this worker too
    assert losses == conf.get("MAX_WORKER_LOSSES") == 3
    assert (poison.status, poison.error_code) == (Status.DEAD, "worker_lost")
    assert now - t0 <= timedelta(minutes=10)
    assert [(a.number, a.outcome) for a in poison.attempt_log.order_by("number")] == [
        (1, Attempt.LOST),
        (2, Attempt.LOST),
        (3, Attempt.LOST),
    ]
    one = {m.pk: list(m.attempt_log.values_list("number", "outcome")) for m in mates}
    assert set(map(tuple, one.values())) == {((1, Attempt.SENT),)}
    # Worst case from the defaults: each loss is seen at most CLAIM_TTL after
    # the poison's send started, plus a poll or relay interval, plus a restart.
    worst = conf.get("MAX_WORKER_LOSSES") * (
        ttl + max(conf.get("POLL_INTERVAL"), conf.get("RELAY_INTERVAL")) + 30
    )
    assert worst < 600


# -- a message that kills its worker: real processes ----------------------------------------

SHORT_CLAIMS = {"CLAIM_TTL": 3.0, "RELAY_INTERVAL": 1.0, "RELAY_GRACE": 2.0, "POLL_INTERVAL": 0.2}


def poison_and_mates() -> tuple[Event, Event, Event]:
    """Four mates, the poison, five mates: one batch at the default size, in
    send order, fanned out before any worker runs."""
    seed_group("before", 4, prefix="b")
    seed_group("victim", 1, prefix="v")
    seed_group("after", 5, prefix="a")
    events = []
    for group, event_type, order in (
        ("before", "order.before", "FINE"),
        ("victim", "order.poison", "POISON"),
        ("after", "order.after", "FINE"),
    ):
        group_rule(group, event_type)
        events.append(notify.trigger(event_type, {"order_id": order}))
    return tuple(events)


def assert_mates_sent_and_twice_only_if_lost(provider, poison_event) -> None:
    """Several sends in flight: every mate sent, none more often than it was
    lost plus once; the poison never got out."""
    poison = Delivery.objects.get(notification__event=poison_event)
    mates = Delivery.objects.exclude(pk=poison.pk)
    assert (poison.status, poison.error_code) == (Status.DEAD, "worker_lost")
    accepted = provider.accepted()
    assert poison.pk not in accepted
    assert set(mates.values_list("status", flat=True)) == {Status.SENT}
    for mate in mates:
        lost = mate.attempt_log.filter(outcome=Attempt.LOST).count()
        assert 1 <= accepted.get(mate.pk, 0) <= 1 + lost, (mate.pk, accepted, lost)


def assert_mates_once_and_poison_dead(provider, poison_event) -> None:
    poison = Delivery.objects.get(notification__event=poison_event)
    mates = Delivery.objects.exclude(pk=poison.pk)
    assert (poison.status, poison.error_code) == (Status.DEAD, "worker_lost")
    losses = poison.attempt_log.filter(outcome=Attempt.LOST).count()
    assert losses == conf.DEFAULTS["MAX_WORKER_LOSSES"]
    accepted = provider.accepted()
    assert poison.pk not in accepted  # it never got out
    assert {pk: accepted.get(pk, 0) for pk in mates.values_list("pk", flat=True)} == {
        pk: 1 for pk in mates.values_list("pk", flat=True)
    }
    assert set(mates.values_list("status", flat=True)) == {Status.SENT}
    assert not DeliveryAttempt.objects.filter(delivery__in=mates).exclude(outcome=Attempt.SENT)
    assert our_books()["sent_twice"] == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_flight", [1, None], ids=["one-in-flight", "several-in-flight"])
def test_a_poison_message_in_the_embedded_pool(tmp_path, counting, in_flight):
    """``notify worker`` (2 threads) dies with the poison at every try; a
    supervisor starts it again, as systemd would. With one send in flight the
    mates are each sent once; at the defaults (several in flight,
    ``notify.delivery.inflight``) a kill costs at most the sends in flight:
    only a mate in flight at a kill (a "lost" attempt on record) may arrive twice."""
    overrides = {**SHORT_CLAIMS, "SENDS_IN_FLIGHT": in_flight or 64}
    with machine_to_ourselves():
        _, poison_event, _ = poison_and_mates()
        run_fan_out_only()  # one batch of ten
        env = process_env(
            tmp_path / "var",
            provider_url=counting.url,
            kill_on="POISON",
            overrides=overrides,
        )
        worker = notify_worker("pool", env, tmp_path, threads=2, skip_checks=True)
        deadline = time.monotonic() + 90
        try:
            worker.start()
            while time.monotonic() < deadline:
                if not worker.alive:
                    worker.start()  # the supervisor
                if Delivery.objects.count() == 10 and final_count() == 10:
                    break
                time.sleep(0.2)
        finally:
            worker.stop()
        assert final_count() == 10, (our_books(), worker.text()[-3000:])
        assert worker.starts == 1 + conf.DEFAULTS["MAX_WORKER_LOSSES"]
    if in_flight == 1:
        assert_mates_once_and_poison_dead(counting, poison_event)
    else:
        assert_mates_sent_and_twice_only_if_lost(counting, poison_event)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_poison_message_under_a_celery_worker(settings, tmp_path, counting):
    """A real ``celery -A notify worker`` (prefork, 2 processes) over RabbitMQ on
    PostgreSQL; the pool process that sends the poison dies at every try, the
    relay (the scheduler's job, run here) hands the lost work off again."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the Celery tests' database)")
    if not reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    with machine_to_ourselves():
        queue = unique_queue()
        settings.NOTIFY = {
            **settings.NOTIFY,
            **SHORT_CLAIMS,
            "BROKER_URL": RABBITMQ_URL,
            "CELERY_QUEUE": queue,
        }
        notify_celery.configure()
        relay.recently_relayed.clear()
        env = process_env(
            tmp_path / "var",
            provider_url=counting.url,
            broker_url=RABBITMQ_URL,
            queue=queue,
            kill_on="POISON",
            overrides=SHORT_CLAIMS,
        )
        worker = celery_worker("w", env, tmp_path, concurrency=2)
        try:
            # The three events are fanned out here, so the ten deliveries are
            # handed off together: one message, one batch.
            settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": None}
            _, poison_event, _ = poison_and_mates()
            run_fan_out_only()
            settings.NOTIFY = {**settings.NOTIFY, "BROKER_URL": RABBITMQ_URL}
            worker.start()
            worker.wait_ready(90)
            get_dispatcher().hand_off_deliveries(
                list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
            )

            def settled() -> bool:
                relay.relay()  # the scheduler's job
                return final_count() == 10

            assert wait_until(settled, 90, interval=0.5), (our_books(), worker.text()[-4000:])
            assert worker.alive  # the main process outlived its pool processes
        finally:
            worker.stop()
            drop_broker_queue(RABBITMQ_URL, queue)
    assert_mates_once_and_poison_dead(counting, poison_event)


def run_fan_out_only() -> None:
    for event_id in claim_events(limit=10, ttl=60):
        process_event(event_id)
