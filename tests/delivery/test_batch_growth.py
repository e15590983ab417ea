"""A worker's batch with sends in flight grows instead of draining (issue 14).

Against a provider that takes its time, a batch whose deliveries have all
started claims more of its channel's due deliveries under the same claim as
its last sends drain (``notify.outbox.rows.claim_more``,
``notify.delivery.inflight.send_all``), for ``GROW_SECONDS`` at most and
never past ``WORKER_BATCH_SECONDS``; what
it claimed and did not start by then goes back to pending untried. Counted at
the receiver, per ``X-Notify-Delivery``. Not at one send at a time (the
default), nor for a queuing channel (in-app).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from notify import conf, trigger
from notify.delivery.send import GROW_SECONDS
from notify.fanout.pipeline import process_event
from notify.models import Delivery, DeliveryAttempt, Notification
from notify.models.status import Status
from notify.outbox.rows import SUSPECT, claim_due_deliveries, claim_events, claim_more
from notify.runtime.worker import run_once
from tests.peers.counting_provider import CountingProvider

pytestmark = pytest.mark.django_db

BATCH = 4
IN_FLIGHT = 8
LATENCY = 0.3


@pytest.fixture
def slow_provider():
    provider = CountingProvider()
    provider.latency = LATENCY
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def counting(settings, slow_provider):
    """The ``counting`` channel, 8 in flight, batches of 4; the rest at the defaults."""
    channel = {
        "BACKEND": "tests.peers.counting_provider.CountingChannel",
        "OPTIONS": {"URL": slow_provider.url},
    }
    settings.NOTIFY = {
        **settings.NOTIFY,
        "SENDS_IN_FLIGHT": IN_FLIGHT,
        "WORKER_BATCH_SIZE": BATCH,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "counting": channel},
    }
    return slow_provider


def fanned_out(make_rule, make_user, count: int, *channels: str) -> list[Delivery]:
    """One event to ``count`` users on ``channels`` (``counting``), fanned out."""
    channels = channels or ("counting",)
    users = [make_user() for _ in range(count)]
    make_rule(channels=list(channels))
    trigger("order.shipped", {"order_id": "G1"}, recipients=users)
    for event_id in claim_events(limit=10, ttl=60):
        process_event(event_id)
    deliveries = list(Delivery.objects.filter(status=Status.PENDING))
    assert len(deliveries) == count * len(channels)
    return deliveries


def test_a_batch_grows_under_its_claim_until_nothing_is_due(counting, make_rule, make_user):
    """40 due, batches of 4, 8 in flight, WORKER_BATCH_SECONDS and CLAIM_TTL
    at their defaults: one worker round sends all 40, each once at the
    receiver, with more in flight than a batch holds."""
    assert conf.get("WORKER_BATCH_SECONDS") == conf.DEFAULTS["WORKER_BATCH_SECONDS"]
    deliveries = fanned_out(make_rule, make_user, 40)

    assert run_once() == 40  # one claim of 4, grown by 36

    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.SENT}
    assert counting.accepted() == Counter({d.pk: 1 for d in deliveries})
    assert BATCH < counting.peak_in_flight <= IN_FLIGHT
    attempts = DeliveryAttempt.objects.values_list("number", "outcome")
    assert Counter(attempts) == Counter({(1, DeliveryAttempt.Outcome.SENT): 40})
    assert run_once() == 0


def test_growth_stops_at_worker_batch_seconds(settings, counting, make_rule, make_user):
    """With WORKER_BATCH_SECONDS at 1 s (its twin at the default is the test
    above), the round ends within about a send of it: what was sent arrived
    once, the rest is pending, untried, and never reached the receiver."""
    settings.NOTIFY = {**settings.NOTIFY, "WORKER_BATCH_SECONDS": 1.0}
    deliveries = fanned_out(make_rule, make_user, 200)

    started = time.monotonic()
    done = run_once()
    took = time.monotonic() - started

    assert took < 1.0 + 3 * LATENCY + 1.0, took
    sent = set(Delivery.objects.filter(status=Status.SENT).values_list("pk", flat=True))
    assert BATCH < len(sent) < 200 and done >= len(sent)
    assert counting.accepted() == Counter(dict.fromkeys(sent, 1))
    rest = Delivery.objects.exclude(pk__in=sent)
    assert set(rest.values_list("status", "attempts", "sending_since")) == {
        (Status.PENDING, 0, None)
    }
    assert not DeliveryAttempt.objects.filter(delivery__in=rest).exists()
    assert len(sent) + rest.count() == len(deliveries)


def test_growth_ends_after_grow_seconds_at_the_defaults(counting, make_rule, make_user):
    """At the defaults (WORKER_BATCH_SECONDS 60 s) a batch grows for
    ``GROW_SECONDS`` only: the events and workflow runs its worker thread
    would take next wait about that long under a backlog, not a minute. 400
    due at ~27 a second would take 15 s; the round ends after about 5, what it
    did not start pending and untried."""
    assert conf.get("WORKER_BATCH_SECONDS") == conf.DEFAULTS["WORKER_BATCH_SECONDS"]
    deliveries = fanned_out(make_rule, make_user, 400)

    started = time.monotonic()
    run_once()
    took = time.monotonic() - started

    assert took < GROW_SECONDS + 3 * LATENCY + 1.5, took
    sent = set(Delivery.objects.filter(status=Status.SENT).values_list("pk", flat=True))
    assert BATCH < len(sent) < len(deliveries)
    assert counting.accepted() == Counter(dict.fromkeys(sent, 1))
    rest = Delivery.objects.exclude(pk__in=sent)
    assert set(rest.values_list("status", "attempts", "sending_since")) == {
        (Status.PENDING, 0, None)
    }


def test_deliveries_claimed_and_not_started_go_back_untried(counting, make_rule, make_user):
    """The round stops (the worker pool stopping, as at WORKER_BATCH_SECONDS)
    right after the batch grew: the grown deliveries were claimed but none
    started, so they are pending again, their attempt given back."""
    fanned_out(make_rule, make_user, 12)
    claimed = Delivery.objects.filter(status=Status.SENDING)

    assert run_once(stopping=lambda: claimed.count() > BATCH) == BATCH + 4

    sent = Delivery.objects.filter(status=Status.SENT)
    assert sent.count() == BATCH
    assert counting.accepted() == Counter({d.pk: 1 for d in sent})
    assert set(Delivery.objects.exclude(status=Status.SENT).values_list("status", "attempts")) == {
        (Status.PENDING, 0)
    }
    assert DeliveryAttempt.objects.count() == BATCH


def test_no_growth_at_one_send_at_a_time(settings, counting, make_rule, make_user):
    """At the default SENDS_IN_FLIGHT (1) a round sends its batch and no more."""
    settings.NOTIFY = {**settings.NOTIFY, "SENDS_IN_FLIGHT": conf.DEFAULTS["SENDS_IN_FLIGHT"]}
    fanned_out(make_rule, make_user, 12)

    assert run_once() == BATCH

    assert Delivery.objects.filter(status=Status.SENT).count() == BATCH
    assert counting.received() == BATCH
    assert Delivery.objects.filter(status=Status.PENDING).count() == 12 - BATCH


def test_no_growth_for_in_app(settings, counting, make_rule, make_user):
    """A queuing channel makes its sends at flush, once a batch: it never grows."""
    inapp = {**settings.NOTIFY["CHANNELS"]["inapp"], "CONCURRENCY": IN_FLIGHT}
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "inapp": inapp},
    }
    fanned_out(make_rule, make_user, 12, "inapp")

    assert run_once() == BATCH

    assert Delivery.objects.filter(status=Status.SENT).count() == BATCH
    assert Notification.objects.filter(inbox_at__isnull=False).count() == BATCH
    assert Delivery.objects.filter(status=Status.PENDING).count() == 12 - BATCH


def test_claim_more_takes_due_rows_of_its_channel_under_the_token(counting, make_rule, make_user):
    """Due, pending rows of the channel asked for (never a suspect, sent
    alone), claimed with the running batch's token."""
    fanned_out(make_rule, make_user, 6, "counting", "inapp")
    first, token = claim_due_deliveries(
        limit=1, ttl=60, ids=[Delivery.objects.filter(channel="counting").order_by("pk")[0].pk]
    )
    counting_rows = Delivery.objects.filter(channel="counting").order_by("pk")
    later, suspect, *due = [d.pk for d in counting_rows.exclude(pk__in=first)]
    Delivery.objects.filter(pk=later).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    Delivery.objects.filter(pk=suspect).update(hold_reason=SUSPECT)

    more = claim_more(10, token, "counting")

    assert sorted(more) == due
    assert set(
        Delivery.objects.filter(pk__in=[*first, *more]).values_list(
            "status", "claimed_until", "attempts"
        )
    ) == {(Status.SENDING, token, 1)}
    others = Delivery.objects.exclude(pk__in=[*first, *more])
    assert set(others.values_list("status", flat=True)) == {Status.PENDING}
    assert claim_more(10, token, "counting") == []


def test_claim_more_leaves_an_expired_claim_to_the_reaper(counting, make_rule, make_user):
    """A row of the channel whose claim expired (its worker died) is neither
    claimed nor reaped by a growing batch: ``claim_due_deliveries`` sorts it
    out (suspect or never started) before anyone sends it."""
    fanned_out(make_rule, make_user, 3, "counting")
    first, token = claim_due_deliveries(limit=1, ttl=60)
    lost, due = Delivery.objects.exclude(pk__in=first).order_by("pk").values_list("pk", flat=True)
    gone = timezone.now() - timedelta(minutes=1)
    Delivery.objects.filter(pk=lost).update(status=Status.SENDING, claimed_until=gone)

    assert claim_more(10, token, "counting") == [due]
    assert Delivery.objects.filter(pk=lost, status=Status.SENDING, claimed_until=gone).exists()


def test_only_the_last_channel_of_a_batch_grows(settings, counting, make_rule, make_user):
    """A batch of two channels: the first sends its part and no more (the
    second's deliveries must not wait behind it); the second grows."""
    second = {**settings.NOTIFY["CHANNELS"]["counting"]}
    settings.NOTIFY = {
        **settings.NOTIFY,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], "counting2": second},
    }
    fanned_out(make_rule, make_user, 12, "counting", "counting2")
    early = timezone.now() - timedelta(minutes=1)
    for channel in ("counting", "counting2"):
        first_two = Delivery.objects.filter(channel=channel).order_by("pk")[:2]
        Delivery.objects.filter(pk__in=[d.pk for d in first_two]).update(next_attempt_at=early)

    assert run_once() == BATCH + 10

    sent = Counter(Delivery.objects.filter(status=Status.SENT).values_list("channel", flat=True))
    assert sent == Counter({"counting": 2, "counting2": 12})
    assert counting.received() == 14 and set(counting.accepted().values()) == {1}
