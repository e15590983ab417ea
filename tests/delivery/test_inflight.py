"""Several sends in flight per batch (``notify.delivery.inflight``), counted at the receiver.

Providers that take a second to answer, with sends in flight switched on
(``SENDS_IN_FLIGHT`` 64) at the channels' defaults (8 SMTP sessions, 32 HTTP
requests per batch) and with a ``CONCURRENCY`` of the channel's own: each delivery arrives exactly once (counted per delivery id), the
receiver sees the limit reached and never passed, and a configuration error
met while several sends are in flight fails the rest of the batch untried.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from notify import trigger
from notify.models import ContactPoint, Delivery, DeliveryAttempt
from notify.models.status import Status
from notify.runtime.worker import run_until_idle
from tests.peers.counting_provider import CountingProvider

Attempt = DeliveryAttempt.Outcome


def batch_of(settings, size: int, **channels) -> None:
    """Batches of ``size``, sends in flight switched on (NOTIFY_SENDS_IN_FLIGHT=64)."""
    settings.NOTIFY = {
        **settings.NOTIFY,
        "SENDS_IN_FLIGHT": 64,
        "WORKER_BATCH_SIZE": size,
        "CHANNELS": {**settings.NOTIFY["CHANNELS"], **channels},
    }


@pytest.mark.django_db
def test_emails_keep_8_in_flight_and_arrive_once(settings, smtp_mailer, make_rule, make_user):
    smtp_mailer.latency = 1.0  # a real server's second before its 250
    batch_of(settings, 24)
    users = [make_user(f"reader{i}") for i in range(24)]
    make_rule(channels=["email"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=users)

    run_until_idle()

    deliveries = list(Delivery.objects.all())
    assert {d.status for d in deliveries} == {Status.SENT}
    received = Counter(m.headers["X-Notify-Delivery"] for m in smtp_mailer.messages)
    assert received == Counter({str(d.pk): 1 for d in deliveries})
    assert smtp_mailer.peak_in_flight == 8  # the default, reached, never passed
    assert smtp_mailer.sessions <= 8
    for d in deliveries:
        assert [a.outcome for a in d.attempt_log.all()] == [Attempt.SENT]


@pytest.fixture
def slow_provider():
    provider = CountingProvider()
    provider.latency = 1.0
    provider.start()
    yield provider
    provider.stop()


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [None, 5])
def test_http_sends_in_flight_reach_the_limit_and_arrive_once(
    settings, slow_provider, make_rule, make_user, limit
):
    channel = {
        "BACKEND": "tests.peers.counting_provider.CountingChannel",
        "OPTIONS": {"URL": slow_provider.url},
        **({"CONCURRENCY": limit} if limit else {}),
    }
    batch_of(settings, 40, counting=channel)
    users = [make_user(f"reader{i}") for i in range(40)]
    make_rule(channels=["counting"])
    trigger("order.shipped", {"order_id": "A1"}, recipients=users)

    run_until_idle()

    deliveries = list(Delivery.objects.all())
    assert {d.status for d in deliveries} == {Status.SENT}
    assert slow_provider.accepted() == Counter({d.pk: 1 for d in deliveries})
    assert slow_provider.peak_in_flight == (limit or 32)


@pytest.mark.django_db
def test_a_configuration_error_while_several_sends_are_in_flight(
    settings, twilio_sms, make_user, make_rule
):
    sms = {**settings.NOTIFY["CHANNELS"]["sms"], "CONCURRENCY": 4}
    batch_of(settings, 12, sms=sms)  # one batch
    users = []
    for i in range(12):
        user = make_user(f"texter{i}")
        ContactPoint.objects.create(
            user=user, kind="phone", address=f"+1415555{i:04d}", verified_at=timezone.now()
        )
        users.append(user)
    make_rule(channels=["sms"])
    twilio_sms.revoke_after(4)  # the auth token is rotated after the 4th message
    trigger("order.shipped", {"order_id": "A1"}, recipients=users)

    run_until_idle()

    # The receiver: four messages, each once; the requests refused are at most
    # the sends that were in flight when the first refusal came back.
    received = Counter(m.to for m in twilio_sms.messages)
    assert len(received) == 4 and set(received.values()) == {1}
    refused_requests = len(twilio_sms.requests) - 4
    assert 1 <= refused_requests <= 4
    deliveries = list(Delivery.objects.all())
    sent = [d for d in deliveries if d.status == Status.SENT]
    refused = [d for d in deliveries if d.status == Status.FAILED and d.attempts]
    untried = [d for d in deliveries if d.status == Status.FAILED and not d.attempts]
    assert len(sent) == 4 and len(refused) == refused_requests
    assert len(sent) + len(refused) + len(untried) == 12
    for d in refused:
        assert d.error_code == "config"
        assert [(a.outcome, a.error_code) for a in d.attempt_log.all()] == [
            (Attempt.PERMANENT, "config")
        ]
    for d in untried:
        assert d.error_code == "config" and "not sent" in d.error_message
        assert not d.attempt_log.exists()
    # Nothing is claimed or sent again.
    assert run_until_idle() == 0
    assert len(twilio_sms.requests) == 4 + refused_requests
